"""A frozen copy of a checkpoint's values, so that saving can go on in the background.

TensorFlow's private checkpoint API that vae_dist uses is here and only here (the list of every
private API is in BUILD_NOTES.md, "Private TensorFlow and Keras API"): tf.__internal__.tracking.Trackable and its
_serialize_to_tensors / _trackable_children hooks. TF's own async checkpointing
(`CheckpointOptions(experimental_enable_async_checkpoint=True)`) is not used: it copies variables
to the host inside a tf.function, where a Keras 3 variable creates a new tf.Variable on every
copy, so the second write of any Keras model fails ("tf.function only supports singleton
tf.Variables created on the first call"); it also fixes the set of variables at the first write
and `Checkpoint.sync()` does not report a failed background write. Instead `take_snapshot` walks
the checkpoint's object graph (tf.train.TrackableView) and builds a frozen twin of it: the same
child names, with every variable replaced by a host tensor read from it. Eager tensors are
immutable (TF copies a variable's buffer before updating it while a read of it is alive), so the
twin holds the values of save() time at the cost of one read per variable. The twin is written
with the public Checkpoint.write; its checkpoint keys and object graph are those of the live
checkpoint, so `Checkpoint.read` restores it like any other. States holding other kinds of
saveable (a tf.data iterator, legacy optimizer slots, ...) raise NotSnapshottable and are saved
synchronously instead.
"""
import sys
from typing import Optional

import tensorflow as tf

# The attribute name under which TF saves a variable's value (trackable.VARIABLE_VALUE_KEY).
_VARIABLE_VALUE_KEY = "VARIABLE_VALUE"


class NotSnapshottable(Exception):
  """The state holds something `take_snapshot` cannot freeze; it is then saved synchronously."""


class _FrozenValue(tf.__internal__.tracking.Trackable):
  """A variable's value at save() time, saved under the attribute name a variable uses."""

  def __init__(self, value: tf.Tensor):
    self._frozen_value = value

  def _serialize_to_tensors(self):
    return {_VARIABLE_VALUE_KEY: self._frozen_value}


class _FrozenNode(tf.__internal__.tracking.Trackable):
  """A non-variable node of the object graph (layer, optimizer, list...) with fixed children."""

  def __init__(self):
    self._frozen_children = {}

  def _trackable_children(self, save_type="checkpoint", **kwargs):
    del save_type, kwargs  # Checkpoints only.
    return dict(self._frozen_children)


class _FrozenCheckpoint(tf.train.Checkpoint):
  """The root of a frozen twin; a tf.train.Checkpoint so that `write` does the whole job."""

  def __init__(self):
    super().__init__()
    # Bypasses AutoTrackable.__setattr__: the dict is bookkeeping, not a dependency to save.
    object.__setattr__(self, "_frozen_children", {})

  def _trackable_children(self, save_type="checkpoint", **kwargs):
    del save_type, kwargs
    return dict(self._frozen_children)


class Snapshot:
  """A frozen twin of a checkpoint, plus the host device its background write must run on."""

  def __init__(self, checkpoint: _FrozenCheckpoint, io_device: Optional[str]):
    self._checkpoint = checkpoint
    self._io_device = io_device

  def write(self, prefix: str) -> None:
    # A new thread does not inherit the training thread's device scope; under a multi-worker
    # cluster the default would be /job:localhost, which does not exist there.
    if self._io_device is None:
      self._checkpoint.write(prefix)
    else:
      with tf.device(self._io_device):
        self._checkpoint.write(prefix)


def as_tf_variable(obj) -> Optional[tf.Variable]:
  """The tf.Variable holding `obj`'s value (itself, or a Keras 3 variable's), else None."""
  if isinstance(obj, tf.Variable):  # Includes tf.distribute's Mirrored/SyncOnRead variables.
    return obj
  keras = sys.modules.get("keras")  # No Keras variable can exist before keras is imported.
  keras_variable = getattr(keras, "Variable", None) if keras is not None else None
  if keras_variable is not None and isinstance(obj, keras_variable):
    inner = obj.value  # The TF backend's tf.Variable (outside an autocast scope, uncast).
    if isinstance(inner, tf.Variable):
      return inner
  return None


def _check_freezable(obj) -> None:
  """Raises NotSnapshottable if a non-variable node saves values of its own."""
  saver_methods = ("_serialize_to_tensors", "_gather_saveables_for_checkpoint")
  for cls in type(obj).__mro__:
    if cls is tf.__internal__.tracking.Trackable:
      continue  # Its methods are the "saves nothing" defaults.
    if any(m in cls.__dict__ for m in saver_methods):
      raise NotSnapshottable(f"{type(obj).__name__} saves values that are not variables")
  # Slot variables (TF1/Keras 2 optimizers) are not children, so the twin would lose them.
  if "get_slot_names" in dir(type(obj)) and obj.get_slot_names():
    raise NotSnapshottable(f"{type(obj).__name__} has slot variables")


def _read_to_host(variable: tf.Variable) -> tf.Tensor:
  # read_value() in cross-replica context is what a checkpoint stores: the primary copy of a
  # mirrored variable, the aggregate of a sync-on-read one (all workers run this read).
  value = variable.read_value()
  device = tf.DeviceSpec.from_string(value.device)
  if device.device_type == "CPU":
    # No copy: the tensor shares the variable's buffer, and the next update of the variable
    # writes to a new buffer because this read is still alive.
    return value
  with tf.device(device.replace(device_type="CPU", device_index=0).to_string()):
    # From an accelerator: the copy that frees device memory and keeps the write off the device.
    return tf.identity(value)


def take_snapshot(checkpoint: tf.train.Checkpoint) -> Snapshot:
  """Builds a frozen twin of `checkpoint` holding its variables' current values.

  Raises:
    NotSnapshottable: the state has saveables other than variables, or slot variables, or the
      checkpoint was created with `root=` (whose object graph is not the Checkpoint's own).
  """
  root_children = tf.train.TrackableView.children(checkpoint)
  if "root" in root_children:
    raise NotSnapshottable("the tf.train.Checkpoint was created with root=")
  root = _FrozenCheckpoint()
  # id -> (original, twin). The original is kept so that its id cannot be reused by another
  # object during the walk; a node reached along two paths gets one twin, as in the real graph.
  twins = {id(checkpoint): (checkpoint, root)}
  io_device = None
  pending = [(root, root_children)]
  while pending:
    twin, children = pending.pop()
    for name, child in children.items():
      entry = twins.get(id(child))
      if entry is None:
        variable = as_tf_variable(child)
        if variable is not None:
          value = _read_to_host(variable)
          io_device = io_device or value.device
          entry = (child, _FrozenValue(value))
        else:
          _check_freezable(child)
          node = _FrozenNode()
          entry = (child, node)
          pending.append((node, tf.train.TrackableView.children(child)))
        twins[id(child)] = entry
      twin._frozen_children[name] = entry[1]  # pylint: disable=protected-access
  return Snapshot(root, io_device)

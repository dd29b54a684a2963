"""An orbax-style checkpoint manager over tf.train.Checkpoint, for local paths and gs://.

Layout under the manager's directory, `<root>` below (the caller passes `<workdir>/checkpoints`):

  <root>/<step>/state/ckpt.index, ckpt.data-*   the train state, written by Checkpoint.write
  <root>/<step>/_CHECKPOINT_METADATA            JSON: step, start/commit timestamps + caller's dict
  <root>/<step>/commit_success.txt              only on filesystems without atomic rename

How a step becomes committed depends on the filesystem:

* Local disk (no scheme, or file://): the step is written under `<root>/<step>.orbax-checkpoint-tmp`
  and renamed to `<root>/<step>` once complete. rename(2) is atomic, so every `<root>/<step>`
  directory is a whole checkpoint.
* Anything else with a scheme (gs://, s3://, ram://, ...): renaming a directory there copies
  object by object (or, on ram://, does not move the files at all), so the step is written in
  place at `<root>/<step>` and `commit_success.txt` is written last. Only marked steps count.

A process killed mid-write therefore leaves either a temporary directory or an unmarked step;
neither is ever listed as committed, and the chief removes them when its next manager starts. A
write that fails (disk full, file size limit, ...) removes them itself and raises a
CheckpointError naming the OS error and the latest committed step.

A restore that fails because the model's shapes changed raises a CheckpointError listing the
variables that differ (shape in the file vs in the model) and those missing on either side.

A local step directory counts as committed only when it holds `_CHECKPOINT_METADATA` and the
state's index (a rename moves both into place at once, so a step without them was damaged later,
by hand or by a failing disk); the chief renames such a step to `<step>.damaged` at start. A
committed step whose files do not read (truncated, a bad checksum) raises DamagedCheckpointError;
the trainer then sets it aside the same way (`set_aside`) and resumes from the next older step.
Nothing is ever deleted for being damaged.

Saving is asynchronous by default, and `save()` returns once the state is snapshotted, so the
training loop may change the variables straight away. TF's own async checkpointing
(`CheckpointOptions(experimental_enable_async_checkpoint=True)`) is not used: it copies variables
to the host inside a tf.function, where a Keras 3 variable creates a new tf.Variable on every
copy, so the second write of any Keras model fails ("tf.function only supports singleton
tf.Variables created on the first call"); it also fixes the set of variables at the first write
and `Checkpoint.sync()` does not report a failed background write. Instead `save()` walks the
checkpoint's object graph (tf.train.TrackableView) and builds a frozen twin of it: the same child
names, with every variable replaced by a host tensor read from it. Eager tensors are immutable
(TF copies a variable's buffer before updating it while a read of it is alive), so the twin holds
the values of save() time at the cost of one read per variable. The background thread writes the
twin with the public Checkpoint.write; its checkpoint keys and object graph are those of the live
checkpoint, so `Checkpoint.read` restores it like any other. States holding other kinds of
saveable (a tf.data iterator, legacy optimizer slots, ...) are saved synchronously instead.
"""
import dataclasses
import errno
import json
import math
import os
import re
import sys
import threading
import time
import uuid
from typing import Any, Mapping, Optional

from absl import logging
import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2

from vae_dist import fileio
from vae_dist.errors import first_line
from vae_dist.errors import CheckpointError
from vae_dist.errors import ConfigError
from vae_dist.errors import DamagedCheckpointError
from vae_dist.errors import WorkdirError

STATE_SUBDIR = "state"
STATE_PREFIX_NAME = "ckpt"
METADATA_FILENAME = "_CHECKPOINT_METADATA"
COMMIT_MARKER_FILENAME = "commit_success.txt"
TMP_SUFFIX = ".orbax-checkpoint-tmp"
# A step that cannot be used (incomplete, or damaged so that it does not load) is renamed to
# `<step>.damaged` (`.damaged-2`, ... when that exists): set aside for a look, never deleted, and
# no longer a step, so the run resumes from the newest intact one.
DAMAGED_SUFFIX = ".damaged"

_STEP_RE = re.compile(r"^\d+$")
# Matches `<step>.orbax-checkpoint-tmp` and its variants (`.deleting`, `.worker<N>`, ...).
_TMP_RE = re.compile(r"^\d+" + re.escape(TMP_SUFFIX))
# Where non-chief workers write their throw-away copy: process memory, never a shared disk.
_SCRATCH_ROOT = "ram://vae_dist_checkpoint_scratch"
# The attribute name under which TF saves a variable's value (trackable.VARIABLE_VALUE_KEY).
_VARIABLE_VALUE_KEY = "VARIABLE_VALUE"
# The checkpoint key of the serialised object graph, and the suffix of every value's key.
_OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
_VALUE_KEY_SUFFIX = "/.ATTRIBUTES/" + _VARIABLE_VALUE_KEY
# How many variables an incompatible-checkpoint message names per category.
_MAX_LISTED = 5
# OS errors a full or limited disk gives, as they appear in TF's messages.
_SPACE_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def is_atomic_rename_filesystem(path: str) -> bool:
  """Whether a directory rename under `path` is atomic (decided by the path's scheme).

  Args:
    path: a local path, a file:// URL or a URL of another filesystem (gs://, ram://, ...).

  Returns:
    True for local paths, where a finished step is committed by renaming its directory.
  """
  return fileio.is_local(path)


def _join(*parts: str) -> str:
  # os.path.join would do on POSIX, but spelling out '/' keeps URLs such as gs:// intact anywhere.
  return "/".join([parts[0].rstrip("/")] + [p.strip("/") for p in parts[1:]])


def state_prefix(step_dir: str) -> str:
  """The tf.train.Checkpoint prefix of the train state inside a step directory."""
  return _join(step_dir, STATE_SUBDIR, STATE_PREFIX_NAME)


def read_metadata(step_dir: str) -> dict:
  """Reads `_CHECKPOINT_METADATA` of a step directory.

  Args:
    step_dir: a committed step directory, `<root>/<step>`.

  Returns:
    The decoded JSON: step, start_timestamp, commit_timestamp (seconds since the epoch) and the
    keys of the dict passed to `CheckpointManager.save`.

  Raises:
    WorkdirError: the file is missing or is not valid JSON.
  """
  path = _join(step_dir, METADATA_FILENAME)
  try:
    with tf.io.gfile.GFile(path, "r") as f:
      return json.loads(f.read())
  except (tf.errors.OpError, OSError, ValueError) as e:
    raise WorkdirError(f"Cannot read checkpoint metadata {path}: {e}") from e


def restore_checkpoint(prefix: str, checkpoint: tf.train.Checkpoint, *,
                       expect_partial: bool = False, advice: Optional[str] = None):
  """Restores `checkpoint` from a state prefix written by `CheckpointManager`.

  Args:
    prefix: a checkpoint prefix (the path without `.index`), e.g. from `resolve_restore_from`.
    checkpoint: the tf.train.Checkpoint to fill; variables may live under any tf.distribute
      strategy, whatever strategy the checkpoint was saved with.
    expect_partial: silence the warnings about values in the file that `checkpoint` does not
      use (a weights-only restore into a Checkpoint holding only the model).
    advice: what the user should do when the checkpoint holds a model of other shapes; ends
      the CheckpointError's message (default: restore it into the model it was written from).

  Returns:
    The load status of `Checkpoint.read` (call `assert_consumed()` etc. on it).

  Raises:
    CheckpointError: variables in the file have other shapes than those of `checkpoint` (the
      message lists them).
    WorkdirError: the checkpoint cannot be read for another reason.
  """
  # Compared before reading: TF would fail half-way, on the first variable, naming it by an
  # internal name, with some variables already overwritten and a warning per unread value.
  differences = _differences(prefix, checkpoint, expect_partial)
  if differences is not None and differences.shapes:
    advice = advice or "Restore it into a model built from the config it was trained with."
    raise CheckpointError(f"Cannot restore checkpoint {prefix}: it holds a model of other "
                          f"shapes than this one. {differences.describe()} {advice}")
  try:
    status = checkpoint.read(prefix)
  except (tf.errors.OpError, ValueError, IndexError) as e:
    # A missing, truncated or corrupt file (TF raises IndexError "Read less bytes than
    # requested" for a truncated data file, DataLossError for a bad checksum): the message is
    # for the user, the chained exception keeps the details.
    raise DamagedCheckpointError(
        f"checkpoint {prefix} is damaged and cannot be read ({first_line(e)}).") from e
  if expect_partial:
    status.expect_partial()
  return status


@dataclasses.dataclass
class _Differences:
  """How a checkpoint's variables differ from those of the objects it is restored into."""
  shapes: list = dataclasses.field(default_factory=list)  # (name, key, file shape, model shape)
  not_in_checkpoint: list = dataclasses.field(default_factory=list)  # names
  not_in_model: list = dataclasses.field(default_factory=list)  # keys

  def describe(self) -> str:
    parts = [_listing(
        f"{len({name for name, *_ in self.shapes})} variable(s) differ in shape",
        [f"{name} {file_shape} in the checkpoint vs {model_shape} in the model (key {key})"
         for name, key, file_shape, model_shape in self.shapes])]
    if self.not_in_checkpoint:
      parts.append(_listing(f"{len(self.not_in_checkpoint)} variable(s) of the model are not in "
                            "the checkpoint", self.not_in_checkpoint))
    if self.not_in_model:
      parts.append(_listing(f"{len(self.not_in_model)} value(s) in the checkpoint are not in "
                            "the model", self.not_in_model))
    return " ".join(parts)


def _listing(title: str, items: list) -> str:
  listed = "; ".join(items[:_MAX_LISTED])
  more = f"; and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
  return f"{title}: {listed}{more}."


def _differences(prefix: str, checkpoint: tf.train.Checkpoint,
                 expect_partial: bool) -> Optional[_Differences]:
  """Compares the variables of `checkpoint` with the file's; None if that cannot be done.

  Objects are matched the way Checkpoint.read matches them: along the object graph stored in
  the file, by the names of the children, from the root down.
  """
  try:
    return _compare(tf.train.load_checkpoint(prefix), checkpoint, expect_partial)
  except Exception as e:  # pylint: disable=broad-except
    # Only a better message is lost: Checkpoint.read reports a missing or corrupt file itself.
    logging.debug("Cannot compare checkpoint %s with the model: %s", prefix, e)
    return None


def _compare(reader, checkpoint: tf.train.Checkpoint, expect_partial: bool) -> _Differences:
  file_shapes = reader.get_variable_to_shape_map()
  graph = trackable_object_graph_pb2.TrackableObjectGraph()
  graph.ParseFromString(reader.get_tensor(_OBJECT_GRAPH_KEY))
  found = _Differences()
  visited_nodes = set()
  for name, variable, nodes in _match_variables(checkpoint, graph):
    visited_nodes.update(nodes)
    keys = [key for key in (_value_key(graph, node) for node in nodes) if key in file_shapes]
    if not keys:
      found.not_in_checkpoint.append(name)
    if not variable.shape.is_fully_defined():
      continue  # Any shape may be restored into it.
    for key in keys:
      if list(file_shapes[key]) != variable.shape.as_list():
        found.shapes.append((name, _short_key(key), list(file_shapes[key]),
                             variable.shape.as_list()))
  if not expect_partial:
    found.not_in_model = [
        _short_key(attr.checkpoint_key) for node_id, node in enumerate(graph.nodes)
        if node_id not in visited_nodes for attr in node.attributes
        if attr.name == _VARIABLE_VALUE_KEY]
  return found


def _match_variables(checkpoint: tf.train.Checkpoint, graph) -> list:
  """Pairs each variable of `checkpoint` with the nodes of `graph` that Checkpoint.read gives it.

  Returns:
    [(readable name, tf.Variable, [node ids])]: a variable reachable along several paths (a
    weight under the model and under the optimizer) gets the nodes of all of them, as the
    restore assigns it from each; none when no path exists in the file. Depth first, in the
    order of the children (the model before the optimizer), so that a message lists the
    model's weights before their optimizer slots.
  """
  children = tf.train.TrackableView.children(checkpoint)
  # Checkpoint(root=x) stores x's object graph, not the Checkpoint's own.
  root = children.get("root", checkpoint)
  variables = {}  # id -> [name, variable, node ids]; dicts keep the order of discovery.
  walked = {(id(root), 0)}  # (object, node) pairs already expanded; graphs may share or loop.
  pending = [(root, 0, "")]
  while pending:
    obj, node, path = pending.pop()
    file_children = ({c.local_name: c.node_id for c in graph.nodes[node].children}
                     if node is not None else {})
    nested = []
    for name, child in tf.train.TrackableView.children(obj).items():
      child_path = f"{path}/{name}" if path else name
      child_node = file_children.get(name)
      variable = _as_tf_variable(child)
      if variable is not None:
        # A Keras variable knows its layer path ("encoder/dense/kernel"); others get the
        # object-graph path ("step").
        readable = getattr(child, "path", None)
        entry = variables.setdefault(
            id(child), [readable if isinstance(readable, str) else child_path, variable, []])
        if child_node is not None and child_node not in entry[2]:
          entry[2].append(child_node)
      elif (id(child), child_node) not in walked:
        walked.add((id(child), child_node))
        nested.append((child, child_node, child_path))
    pending.extend(reversed(nested))
  return [tuple(entry) for entry in variables.values()]


def _value_key(graph, node: Optional[int]) -> Optional[str]:
  if node is None:
    return None
  for attr in graph.nodes[node].attributes:
    if attr.name == _VARIABLE_VALUE_KEY:
      return attr.checkpoint_key
  return None


def _short_key(key: str) -> str:
  return key[:-len(_VALUE_KEY_SUFFIX)] if key.endswith(_VALUE_KEY_SUFFIX) else key


def _committed_steps(root: str) -> list:
  """Committed steps under `root`, sorted; [] when `root` does not exist."""
  try:
    names = tf.io.gfile.listdir(root)
  except tf.errors.NotFoundError:
    return []
  atomic = is_atomic_rename_filesystem(root)
  steps = []
  for name in names:
    name = name.rstrip("/")  # Object stores list "directories" as "5/".
    if not _STEP_RE.match(name):
      continue
    step_dir = _join(root, name)
    if atomic:
      if is_complete(step_dir):
        steps.append(int(name))
    elif tf.io.gfile.exists(_join(step_dir, COMMIT_MARKER_FILENAME)):
      steps.append(int(name))
  return sorted(steps)


def is_complete(step_dir: str) -> bool:
  """Whether a local step directory holds what every commit writes: metadata and the state index.

  A rename commits only whole steps, so an incomplete one was damaged afterwards (emptied, a file
  removed by hand or by a failing disk); it never counts as committed.
  """
  return (tf.io.gfile.exists(_join(step_dir, METADATA_FILENAME)) and
          tf.io.gfile.exists(state_prefix(step_dir) + ".index"))


def _set_aside_name(root: str, step: int) -> str:
  base = _join(root, f"{step}{DAMAGED_SUFFIX}")
  candidate, n = base, 1
  while tf.io.gfile.exists(candidate):
    n += 1
    candidate = f"{base}-{n}"
  return candidate


def _move_tree(source: str, target: str, atomic: bool) -> None:
  """Renames a directory; where renames are not atomic (gs://), copies it and then removes it."""
  if atomic:
    tf.io.gfile.rename(source, target)
    return
  for directory, _, names in tf.io.gfile.walk(source):
    relative = directory[len(source):].strip("/")
    tf.io.gfile.makedirs(_join(target, relative) if relative else target)
    for name in names:
      parts = [p for p in (relative, name) if p]
      tf.io.gfile.copy(_join(source, *parts), _join(target, *parts), overwrite=True)
  tf.io.gfile.rmtree(source)


def _json_default(value):
  # numpy and TF scalars are what metric dicts usually hold.
  if hasattr(value, "numpy"):
    value = value.numpy()
  if hasattr(value, "tolist"):
    return value.tolist()
  raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _rmtree_quietly(path: str) -> None:
  try:
    if tf.io.gfile.exists(path):
      fileio.rmtree(path)
  except (tf.errors.OpError, OSError) as e:
    logging.warning("Could not remove %s: %s", path, e)


class _NotSnapshottable(Exception):
  """The state holds something `_snapshot` cannot freeze; it is then saved synchronously."""


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


class _Snapshot:
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


def _as_tf_variable(obj) -> Optional[tf.Variable]:
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
  """Raises _NotSnapshottable if a non-variable node saves values of its own."""
  saver_methods = ("_serialize_to_tensors", "_gather_saveables_for_checkpoint")
  for cls in type(obj).__mro__:
    if cls is tf.__internal__.tracking.Trackable:
      continue  # Its methods are the "saves nothing" defaults.
    if any(m in cls.__dict__ for m in saver_methods):
      raise _NotSnapshottable(f"{type(obj).__name__} saves values that are not variables")
  # Slot variables (TF1/Keras 2 optimizers) are not children, so the twin would lose them.
  if "get_slot_names" in dir(type(obj)) and obj.get_slot_names():
    raise _NotSnapshottable(f"{type(obj).__name__} has slot variables")


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


def _snapshot(checkpoint: tf.train.Checkpoint) -> _Snapshot:
  """Builds a frozen twin of `checkpoint` holding its variables' current values.

  Raises:
    _NotSnapshottable: the state has saveables other than variables, or slot variables, or the
      checkpoint was created with `root=` (whose object graph is not the Checkpoint's own).
  """
  root_children = tf.train.TrackableView.children(checkpoint)
  if "root" in root_children:
    raise _NotSnapshottable("the tf.train.Checkpoint was created with root=")
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
        variable = _as_tf_variable(child)
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
  return _Snapshot(root, io_device)


class CheckpointManager:
  """Saves, commits, lists, prunes and restores numbered checkpoints under one root directory.

  Typical use in a training loop (every worker runs the same calls):

    manager = CheckpointManager(directory=f"{workdir}/checkpoints", is_chief=is_chief)
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step)
    if (latest := manager.latest_step()) is not None:
      manager.restore(latest, ckpt)
    elif config.restore_from:
      manager.restore_path(config.restore_from, ckpt)
    ...
    manager.save(step, ckpt, {"metrics": {"eval/elbo": elbo}, "num_replicas": 8, ...})
    ...
    manager.close()  # Waits for the last save.

  `save`, `wait_until_finished`, `close` and `restore` must be called from one thread (the
  training loop's), eagerly (not inside a tf.function), outside replica context. Create the
  tf.train.Checkpoint with keyword arguments (model=..., not root=...) so that asynchronous
  saves can snapshot it; other states are saved synchronously, with a warning.

  Args (keyword-only):
    directory: where the steps go, local or a URL (gs://...). Created by the chief if missing.
    is_chief: whether this worker commits checkpoints, prunes old ones and cleans up. Under
      MultiWorkerMirroredStrategy every worker must call `save` (TF may need collectives to read
      the variables), but only the chief writes under `directory`; the others write the same
      checkpoint into an in-memory (ram://) directory of their own and delete it.
    max_to_keep: keep the N most recent committed steps; None keeps every step.
    keep_every_steps: also keep every step that is a multiple of this; 0 turns it off.
    keep_best: also keep the K steps with the highest `best_metric`; 0 turns it off.
    best_metric: the metric `keep_best` ranks, higher is better: looked up in the saved
      metadata as metadata["metrics"][best_metric], else metadata[best_metric].
    async_save: return from `save` once the state is snapshotted and write it in the
      background; False writes and commits before `save` returns.

  Raises:
    ConfigError: a retention setting is out of range (named after the config field).
    WorkdirError: the chief cannot create or clean `directory`.
  """

  def __init__(self, *, directory: str, is_chief: bool = True, max_to_keep: Optional[int] = 3,
               keep_every_steps: int = 0, keep_best: int = 0, best_metric: str = "eval/elbo",
               async_save: bool = True):
    if max_to_keep is not None and max_to_keep < 1:
      raise ConfigError("max_to_keep", f"must be at least 1, got {max_to_keep}.")
    if keep_every_steps < 0:
      raise ConfigError("keep_every_steps", f"must be 0 (off) or positive, got {keep_every_steps}.")
    if keep_best < 0:
      raise ConfigError("keep_best", f"must be 0 (off) or positive, got {keep_best}.")
    self._root = directory.rstrip("/") or directory
    self._is_chief = bool(is_chief)
    self._atomic = is_atomic_rename_filesystem(self._root)
    self._max_to_keep = max_to_keep
    self._keep_every_steps = int(keep_every_steps)
    self._keep_best = int(keep_best)
    self._best_metric = best_metric
    self._async_save = bool(async_save)
    self._scratch_root = _join(_SCRATCH_ROOT, f"{os.getpid()}-{uuid.uuid4().hex}")
    self._warned_sync_fallback = False

    self._thread = None  # The background save in flight, if any.
    self._error = None  # An exception from the background save, raised by the next call.
    self._metadata_cache = {}
    self._metadata_lock = threading.Lock()
    self._closed = False
    self._saved_steps = set()

    if self._is_chief:
      self._prepare_root()
    # Steps this manager will not save again. It is read once here and then only grows with
    # this manager's own saves, never from a fresh listing: every worker must make the same
    # save-or-skip decision, and a listing would race with the chief's background commit.
    self._saved_steps = set(self.all_steps())

  # ---- properties and paths ----------------------------------------------------------------------

  @property
  def directory(self) -> str:
    return self._root

  @property
  def is_chief(self) -> bool:
    return self._is_chief

  @property
  def async_save(self) -> bool:
    return self._async_save

  def step_dir(self, step: int) -> str:
    """The directory of `step` (whether or not it is committed)."""
    return _join(self._root, str(int(step)))

  def state_prefix(self, step: int) -> str:
    """The tf.train.Checkpoint prefix of `step`'s train state."""
    return state_prefix(self.step_dir(step))

  # ---- reading -----------------------------------------------------------------------------------

  def all_steps(self) -> list:
    """The committed steps, sorted ascending (a save still in flight is not listed)."""
    try:
      return _committed_steps(self._root)
    except tf.errors.OpError as e:
      raise WorkdirError(f"Cannot list checkpoints in {self._root}: {e}") from e

  def latest_step(self) -> Optional[int]:
    """The newest committed step, or None when there is none."""
    steps = self.all_steps()
    return steps[-1] if steps else None

  def metadata(self, step: int) -> dict:
    """The `_CHECKPOINT_METADATA` of a committed step.

    Args:
      step: a committed step.

    Returns:
      A dict with step, start_timestamp, commit_timestamp (seconds since the epoch, start <=
      commit) and the keys of the metadata passed to `save`.

    Raises:
      WorkdirError: the step's metadata is missing or unreadable.
    """
    step = int(step)
    with self._metadata_lock:
      cached = self._metadata_cache.get(step)
    if cached is None:
      cached = read_metadata(self.step_dir(step))
      with self._metadata_lock:
        self._metadata_cache[step] = cached
    return json.loads(json.dumps(cached))  # A copy the caller may change.

  def restore(self, step: int, checkpoint: tf.train.Checkpoint, *, expect_partial: bool = False):
    """Restores `checkpoint` from a committed step of this root.

    Waits for a save in flight first, so the step cannot be pruned while it is read.

    Args:
      step: a committed step (see `all_steps`).
      checkpoint: the tf.train.Checkpoint to fill (any strategy).
      expect_partial: for weights-only restores; see `restore_checkpoint`.

    Returns:
      The load status of `Checkpoint.read`.

    Raises:
      CheckpointError: the step holds a model of other shapes than `checkpoint`.
      WorkdirError: the step is not committed here, or cannot be read.
    """
    self.wait_until_finished()
    step = int(step)
    steps = self.all_steps()
    if step not in steps:
      raise WorkdirError(
          f"No committed checkpoint for step {step} in {self._root} (committed: {steps}).")
    logging.info("Restoring checkpoint step %d from %s.", step, self.step_dir(step))
    # Resuming is the only use of a step of this root: the config changed since the run began.
    advice = (f"Checkpoints in {self._root} are unchanged. To resume this run, set the config "
              "back to the values it was started with; to train the changed model, start a new "
              "--workdir.")
    return restore_checkpoint(self.state_prefix(step), checkpoint,
                              expect_partial=expect_partial, advice=advice)

  def resolve_restore_from(self, restore_from: str) -> str:
    """Turns a user's `restore_from` into a state checkpoint prefix.

    Accepted forms, tried in this order:
      * a step number: a committed step in this root;
      * a checkpoint prefix: a path P with a file P.index (`<run>/checkpoints/5/state/ckpt`);
      * a step directory: `<dir>/state/ckpt.index` exists (e.g. `<run>/checkpoints/5`);
      * a checkpoints directory or a workdir holding one: its newest committed step.
    Directories named `<step>.orbax-checkpoint-tmp...` and, on filesystems without atomic
    rename, step directories without `commit_success.txt` are refused as incomplete.

    Args:
      restore_from: the config value.

    Returns:
      The prefix to pass to `restore_checkpoint` (or `tf.train.Checkpoint.read`).

    Raises:
      ConfigError: (field `restore_from`) nothing restorable is at that place.
    """
    value = restore_from.strip()
    if not value:
      raise ConfigError("restore_from", "is empty.")
    if _STEP_RE.match(value):
      step = int(value)
      steps = self.all_steps()
      if step not in steps:
        raise ConfigError(
            "restore_from",
            f"step {step} has no committed checkpoint in {self._root} (committed: {steps}).")
      return self.state_prefix(step)

    path = value.rstrip("/")
    try:
      if tf.io.gfile.exists(path + ".index"):
        _check_complete(path, _parent(_parent(path)))
        return path
      if tf.io.gfile.exists(state_prefix(path) + ".index"):
        _check_complete(path, path)
        return state_prefix(path)
      for candidate_root in (path, _join(path, "checkpoints")):
        steps = _committed_steps(candidate_root)
        if steps:
          logging.info("restore_from %s: using its newest committed step %d.", value, steps[-1])
          return state_prefix(_join(candidate_root, str(steps[-1])))
    except tf.errors.OpError as e:
      raise ConfigError("restore_from", f"cannot read {value}: {e}") from e
    raise ConfigError(
        "restore_from",
        f"{value!r} is neither a step number of {self._root} nor a checkpoint: expected a "
        f"checkpoint prefix P with a file P.index, a step directory containing "
        f"{STATE_SUBDIR}/{STATE_PREFIX_NAME}.index, or a checkpoints directory with committed "
        "steps.")

  def restore_path(self, restore_from: str, checkpoint: tf.train.Checkpoint, *,
                   expect_partial: bool = False) -> str:
    """Resolves a user's `restore_from` (see `resolve_restore_from`) and restores from it.

    Args:
      restore_from: the config value: a step number of this directory or a path.
      checkpoint: the tf.train.Checkpoint to fill; for a weights-only start, one holding only
        the model, with `expect_partial=True`.
      expect_partial: see `restore_checkpoint`.

    Returns:
      The checkpoint prefix restored from.

    Raises:
      ConfigError: nothing restorable at `restore_from`.
      CheckpointError: the checkpoint there holds a model of other shapes than `checkpoint`.
      WorkdirError: the checkpoint there cannot be read.
    """
    self.wait_until_finished()
    prefix = self.resolve_restore_from(restore_from)
    logging.info("Restoring from %s%s.", prefix, " (partial)" if expect_partial else "")
    advice = ("config.restore_from must be a checkpoint of the same model: set the model "
              "fields of the config to those of the run that wrote it, or leave restore_from "
              "empty (config.restore_weights_only does not help when shapes differ: it only "
              "skips the optimizer state and the step).")
    restore_checkpoint(prefix, checkpoint, expect_partial=expect_partial, advice=advice)
    return prefix

  def set_aside(self, step: int, reason: str) -> Optional[str]:
    """Renames a step that cannot be used to `<step>.damaged` (chief only; never deletes it).

    Returns:
      The new name, or None on a worker that is not the chief (it leaves the files alone).

    Raises:
      WorkdirError: the step could not be renamed.
    """
    step = int(step)
    self._saved_steps.discard(step)  # The step may be saved again, once the run gets there.
    with self._metadata_lock:
      self._metadata_cache.pop(step, None)
    if not self._is_chief:
      return None
    source = self.step_dir(step)
    target = _set_aside_name(self._root, step)
    try:
      _move_tree(source, target, self._atomic)
    except (tf.errors.OpError, OSError) as e:
      raise WorkdirError(f"Checkpoint step {step} in {self._root} cannot be used ({reason}) and "
                         f"could not be set aside as {target}: {first_line(e)}. Move it away "
                         "by hand and start again.") from e
    logging.warning("Checkpoint step %d cannot be used (%s); set it aside as %s.", step, reason,
                    target)
    return target

  # ---- saving ------------------------------------------------------------------------------------

  def save(self, step: int, checkpoint: tf.train.Checkpoint,
           metadata: Optional[Mapping[str, Any]] = None) -> bool:
    """Saves `checkpoint` as `step`; with async_save, returns once the state is snapshotted.

    Waits for the previous save first (one save in flight at most) and raises its error if it
    failed. `checkpoint` is only read, and only during this call: the background write works on
    a snapshot, so the training loop may update the variables as soon as this returns.

    Args:
      step: the step number, >= 0.
      checkpoint: the train state.
      metadata: a JSON-serialisable dict stored in `_CHECKPOINT_METADATA` next to step and
        timestamps: eval metrics under "metrics" (where `keep_best` looks for `best_metric`),
        replica count, versions, config hash... numpy scalars and arrays are converted.

    Returns:
      True if a save was started; False if this step was already saved (a committed step is
      never overwritten; the skip is the same on every worker).

    Raises:
      WorkdirError: this save (when synchronous) or the previous background save failed.
      ValueError: a negative step, or metadata that is not JSON-serialisable or uses one of the
        keys step, start_timestamp, commit_timestamp.
      RuntimeError: the manager was closed.
    """
    if self._closed:
      raise RuntimeError("CheckpointManager.save() called after close().")
    step = int(step)
    if step < 0:
      raise ValueError(f"step must be >= 0, got {step}.")
    self.wait_until_finished()
    if step in self._saved_steps:
      logging.info("Checkpoint step %d already exists in %s; not saving it again.", step,
                   self._root)
      return False
    record = self._new_record(step, time.time(), metadata)

    snapshot = None
    if self._async_save:
      try:
        snapshot = _snapshot(checkpoint)
      except _NotSnapshottable as e:
        if not self._warned_sync_fallback:
          logging.warning("Saving checkpoints synchronously: the train state cannot be "
                          "snapshotted (%s).", e)
          self._warned_sync_fallback = True
    self._saved_steps.add(step)
    if snapshot is None:
      try:
        self._write_step(step, record, checkpoint)
      except BaseException:
        self._saved_steps.discard(step)  # A failed step may be saved again.
        raise
      return True
    # Not a daemon thread: an interpreter that exits while a save is in flight waits for its
    # commit instead of leaving a half-written step.
    self._thread = threading.Thread(
        target=self._background_write, args=(step, record, snapshot),
        name=f"vae_dist-checkpoint-{step}")
    self._thread.start()
    return True

  def wait_until_finished(self) -> None:
    """Blocks until the save in flight (if any) is committed.

    Raises:
      WorkdirError (or the original exception for unexpected errors): the background save
        failed; the error is raised once.
    """
    thread, self._thread = self._thread, None
    if thread is not None:
      thread.join()
    error, self._error = self._error, None
    if error is not None:
      raise error

  def close(self) -> None:
    """Waits for the save in flight and refuses further saves."""
    if self._closed:
      return
    self._closed = True
    self.wait_until_finished()

  def __enter__(self):
    return self

  def __exit__(self, exc_type, exc, tb):
    if exc_type is None:
      self.close()
    else:
      # Keep the original exception; still let the last save finish.
      self._closed = True
      try:
        self.wait_until_finished()
      except Exception as e:  # pylint: disable=broad-except
        logging.error("The last checkpoint save failed too: %s", e)
    return False

  # ---- internals ---------------------------------------------------------------------------------

  def _new_record(self, step, start, metadata) -> dict:
    """The JSON record of a step: step and timestamps, then the caller's metadata."""
    metadata = dict(metadata or {})
    reserved = sorted({"step", "start_timestamp", "commit_timestamp"} & set(metadata))
    if reserved:
      raise ValueError(f"Checkpoint metadata may not set {reserved}: the manager writes them.")
    record = {"step": step, "start_timestamp": start, "commit_timestamp": None, **metadata}
    try:
      # Round-trip now so that a bad value fails in the caller's frame, not in the background.
      return json.loads(json.dumps(record, default=_json_default))
    except (TypeError, ValueError) as e:
      raise ValueError(f"Checkpoint metadata for step {step} is not JSON-serialisable: {e}") from e

  def _background_write(self, step: int, record: dict, snapshot: _Snapshot) -> None:
    try:
      self._write_step(step, record, snapshot)
    except BaseException as e:  # pylint: disable=broad-except
      # Kept for the training loop's next call, whose message is the one the user reads;
      # logged briefly now in case that call never comes.
      logging.error("Background save of checkpoint step %d failed: %s", step,
                    _reason(e)[0] if isinstance(e, CheckpointError) else e)
      self._saved_steps.discard(step)  # A failed step may be saved again.
      self._error = e

  def _write_step(self, step: int, record: dict, writer) -> None:
    """Writes `writer` (a Checkpoint or a _Snapshot) as `step`: committed, or scratch."""
    if self._is_chief:
      self._commit(step, record, writer)
      return
    # Non-chief workers write the same checkpoint (it is the same program) to a directory of
    # their own and drop it: only the chief's copy is kept.
    scratch = _join(self._scratch_root, str(step))
    try:
      writer.write(state_prefix(scratch))
    except (tf.errors.OpError, OSError) as e:
      raise WorkdirError(f"Could not write checkpoint step {step} to {scratch}: {e}") from e
    finally:
      _rmtree_quietly(scratch)

  def _commit(self, step: int, record: dict, writer) -> None:
    """Writes the state and metadata of `step` and commits the step (chief only)."""
    final_dir = self.step_dir(step)
    work_dir = final_dir + TMP_SUFFIX if self._atomic else final_dir
    try:
      if tf.io.gfile.exists(work_dir):
        # An earlier attempt at this step in this process failed half-way.
        fileio.rmtree(work_dir)
      tf.io.gfile.makedirs(_join(work_dir, STATE_SUBDIR))
      writer.write(state_prefix(work_dir))
      record["commit_timestamp"] = max(time.time(), record["start_timestamp"])
      with tf.io.gfile.GFile(_join(work_dir, METADATA_FILENAME), "w") as f:
        f.write(json.dumps(record, indent=2, sort_keys=True))
      if self._atomic:
        tf.io.gfile.rename(work_dir, final_dir)
      else:
        # Written last: its presence is what makes the step committed.
        with tf.io.gfile.GFile(_join(work_dir, COMMIT_MARKER_FILENAME), "w") as f:
          f.write(f"Checkpoint commit was successful to {final_dir}\n")
    except (tf.errors.OpError, OSError) as e:
      # Nothing half-written may stay behind looking like a save under way (or, without atomic
      # rename, like a step that a marker could still commit).
      _rmtree_quietly(work_dir)
      raise CheckpointError(self._write_failure(step, e)) from e
    with self._metadata_lock:
      self._metadata_cache[step] = record
    logging.info("Committed checkpoint step %d to %s (%.2f s after save() was called).", step,
                 final_dir, record["commit_timestamp"] - record["start_timestamp"])
    self._apply_retention()

  def _write_failure(self, step: int, error: Exception) -> str:
    """The message for a failed commit: why, what is still safe, what to do."""
    reason, out_of_space = _reason(error)
    try:
      steps = self.all_steps()
    except WorkdirError:
      steps = None
    if steps:
      kept = (f"Committed checkpoints are unchanged: the latest is step {steps[-1]}, where the "
              "run resumes when started again.")
    elif steps is not None:
      kept = "No checkpoint of this run was committed before, so a restart begins anew."
    else:
      kept = "Committed checkpoints were not touched."
    if out_of_space:
      todo = ("Free some space there (or raise the disk quota or file size limit) and start "
              "the run again.")
    else:
      todo = "Make sure the directory is writable and start the run again."
    return (f"Could not save checkpoint step {step} in {self._root}: {reason}. {kept} {todo}")

  def _prepare_root(self) -> None:
    """Creates the root and removes what interrupted saves left behind (chief only)."""
    try:
      tf.io.gfile.makedirs(self._root)
      names = tf.io.gfile.listdir(self._root)
    except tf.errors.OpError as e:
      raise WorkdirError(f"Cannot create or list the checkpoint directory {self._root}: {e}") from e
    for name in sorted(n.rstrip("/") for n in names):
      path = _join(self._root, name)
      if _TMP_RE.match(name):
        reason = "temporary directory of an unfinished save"
      elif (not self._atomic and _STEP_RE.match(name)
            and not tf.io.gfile.exists(_join(path, COMMIT_MARKER_FILENAME))):
        reason = f"step directory without {COMMIT_MARKER_FILENAME} (unfinished save)"
      elif self._atomic and _STEP_RE.match(name) and not is_complete(path):
        if not tf.io.gfile.isdir(path):
          raise WorkdirError(f"{path} is not a directory, where checkpoint step {name} should "
                             "be one; move it out of the checkpoints directory and start again.")
        # Renamed into place whole, so it was damaged since: keep it for a look.
        self.set_aside(int(name), f"it lacks {METADATA_FILENAME} or "
                       f"{STATE_SUBDIR}/{STATE_PREFIX_NAME}.index")
        continue
      else:
        continue
      logging.warning("Removing %s: %s.", path, reason)
      try:
        fileio.rmtree(path)
      except tf.errors.OpError as e:
        raise WorkdirError(f"Cannot remove the incomplete checkpoint {path}: {e}") from e

  def _metric(self, step: int) -> Optional[float]:
    try:
      record = self.metadata(step)
    except WorkdirError as e:
      logging.warning("Step %d is not ranked for keep_best: %s", step, e)
      return None
    metrics = record.get("metrics")
    value = metrics.get(self._best_metric) if isinstance(metrics, dict) else None
    if value is None:
      value = record.get(self._best_metric)
    if isinstance(value, (int, float)) and math.isfinite(value):
      return float(value)
    return None

  def _steps_to_keep(self, steps: list) -> set:
    keep = set(steps if self._max_to_keep is None else steps[-self._max_to_keep:])
    if self._keep_every_steps:
      keep.update(s for s in steps if s % self._keep_every_steps == 0)
    if self._keep_best:
      ranked = sorted(((m, s) for s in steps if (m := self._metric(s)) is not None), reverse=True)
      keep.update(s for _, s in ranked[:self._keep_best])
    if steps:
      keep.add(steps[-1])  # The newest step is what a restart resumes from.
    return keep

  def _apply_retention(self) -> None:
    steps = self.all_steps()
    keep = self._steps_to_keep(steps)
    for step in steps:
      if step not in keep:
        self._delete_step(step)

  def _delete_step(self, step: int) -> None:
    """Uncommits a step first, then deletes its files, so a crash never leaves half a step."""
    step_dir = self.step_dir(step)
    try:
      if self._atomic:
        trash = step_dir + TMP_SUFFIX + ".deleting"
        _rmtree_quietly(trash)
        tf.io.gfile.rename(step_dir, trash)
        fileio.rmtree(trash)
      else:
        tf.io.gfile.remove(_join(step_dir, COMMIT_MARKER_FILENAME))
        fileio.rmtree(step_dir)
    except (tf.errors.OpError, OSError) as e:
      # Not fatal: the newer checkpoints are safe; a leftover is retried at the next commit or
      # removed at the next start.
      logging.warning("Could not delete old checkpoint %s: %s", step_dir, e)
      return
    with self._metadata_lock:
      self._metadata_cache.pop(step, None)
    logging.info("Deleted old checkpoint %s.", step_dir)


def _reason(error: BaseException) -> tuple:
  """(the OS error in a failed write's message, whether it says the disk or a limit is full).

  TF reports a failed write as "{{function_node ...}} <file>; File too large [Op:SaveV2]":
  the user needs the last part, not the temporary file's name.
  """
  if isinstance(error, CheckpointError) and error.__cause__ is not None:
    error = error.__cause__
  text = error.message if isinstance(error, tf.errors.OpError) else str(error)
  for code in _SPACE_ERRNOS:
    if os.strerror(code) in text:
      return os.strerror(code), True
  if isinstance(error, OSError) and error.strerror:
    return error.strerror, False
  text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
  return re.sub(r"\s*\[Op:\w+\]\s*$", "", text).strip(), False


def _check_complete(value: str, step_dir: str) -> None:
  """Refuses a prefix or step directory that belongs to an unfinished save."""
  if any(_TMP_RE.match(part) for part in value.split("/")):
    raise ConfigError("restore_from", f"{value} is an unfinished (temporary) checkpoint.")
  name = step_dir.rstrip("/").rsplit("/", 1)[-1]
  if (not is_atomic_rename_filesystem(step_dir) and _STEP_RE.match(name)
      and not tf.io.gfile.exists(_join(step_dir, COMMIT_MARKER_FILENAME))):
    raise ConfigError("restore_from",
                      f"{value} was never committed (no {COMMIT_MARKER_FILENAME} in {step_dir}).")


def _parent(path: str) -> str:
  return path.rstrip("/").rsplit("/", 1)[0] if "/" in path.rstrip("/") else ""

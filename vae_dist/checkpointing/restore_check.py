"""Restoring a tf.train.Checkpoint with errors a user can act on.

A restore that fails because the model's shapes changed raises a CheckpointError listing the
variables that differ (shape in the file vs in the model) and those missing on either side; a
file that does not read (truncated, a bad checksum) raises DamagedCheckpointError.
"""
import dataclasses
from typing import Optional

from absl import logging
import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2

from vae_dist.checkpointing import snapshot
from vae_dist.errors import CheckpointError
from vae_dist.errors import DamagedCheckpointError
from vae_dist.errors import first_line

# The attribute name under which TF saves a variable's value (trackable.VARIABLE_VALUE_KEY).
_VARIABLE_VALUE_KEY = "VARIABLE_VALUE"
# The checkpoint key of the serialised object graph, and the suffix of every value's key.
_OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
_VALUE_KEY_SUFFIX = "/.ATTRIBUTES/" + _VARIABLE_VALUE_KEY
# How many variables an incompatible-checkpoint message names per category.
_MAX_LISTED = 5


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
      variable = snapshot.as_tf_variable(child)
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

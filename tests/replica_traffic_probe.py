"""Counts what a traced train step sends between replicas (shared by tests and benchmarks)."""
import collections

import tensorflow as tf


class CountingReduction(tf.distribute.ReductionToOneDevice):
  """ReductionToOneDevice that records every reduction and broadcast it is asked for.

  Records only the outermost call: a batch reduction is one all-reduce of several tensors,
  whatever the implementation does inside.
  """

  def __init__(self):
    super().__init__()
    self.calls = []
    self._depth = 0

  def _record(self, kind, sizes, fn, *args):
    if self._depth == 0:
      self.calls.append((kind, sizes))
    self._depth += 1
    try:
      return fn(*args)
    finally:
      self._depth -= 1

  def reduce_implementation(self, reduce_op, per_replica_value, destinations, options):
    return self._record("all_reduce", [per_replica_value.values[0].shape.num_elements()],
                        super().reduce_implementation, reduce_op, per_replica_value,
                        destinations, options)

  def batch_reduce_implementation(self, reduce_op, value_destination_pairs, options):
    sizes = [v.values[0].shape.num_elements() for v, _ in value_destination_pairs]
    return self._record("all_reduce", sizes, super().batch_reduce_implementation, reduce_op,
                        value_destination_pairs, options)

  def broadcast_implementation(self, tensor, destinations):
    return self._record("broadcast", [tensor.shape.num_elements()],
                        super().broadcast_implementation, tensor, destinations)


def cross_device_edges(graph_def) -> int:
  """Data-flow edges, in every function of the graph, whose two ends are on different devices."""
  count = 0
  for nodes in [graph_def.node] + [f.node_def for f in graph_def.library.function]:
    device = {n.name: n.device for n in nodes}
    for n in nodes:
      for name in n.input:
        source = device.get(name.lstrip("^").split(":")[0], "")
        count += bool(source and n.device and source != n.device)
  return count


def step_traffic(config_name: str, replicas: int) -> dict:
  """Traces one train step of configs/<config_name>.py:smoke on `replicas` logical CPUs."""
  from conftest import build_trainer, load_config  # pylint: disable=g-import-not-at-top
  config = load_config(config_name, "smoke")
  config.batch_size = 4 * replicas
  ops = CountingReduction()
  devices = [d.name for d in tf.config.list_logical_devices("CPU")[:replicas]]
  strategy = tf.distribute.MirroredStrategy(devices, cross_device_ops=ops)
  trainer = build_trainer(config, strategy)
  shape = [config.batch_size, config.image_size, config.image_size, config.channels]
  data = tf.data.Dataset.from_tensors({"image": tf.zeros(shape)}).repeat()
  iterator = iter(strategy.experimental_distribute_dataset(data))
  graph = trainer.train_loop.get_concrete_function(iterator, tf.constant(1)).graph
  kinds = collections.Counter(kind for kind, _ in ops.calls)
  return {
      "config": config_name,
      "replicas": replicas,
      "trainable_parameters": sum(v.shape.num_elements()
                                  for v in trainer.model.trainable_variables),
      "all_reduces": kinds["all_reduce"],
      "all_reduce_elements": sum(sum(s) for k, s in ops.calls if k == "all_reduce"),
      "all_reduce_sizes": [s for k, s in ops.calls if k == "all_reduce"],
      "broadcasts": kinds["broadcast"],
      "cross_device_edges": cross_device_edges(graph.as_graph_def()),
  }

"""Replica-local variables: metric sums and integer counters that cost no per-step traffic.

Each replica adds to (or writes) its own copy; a read in cross-replica context sums the copies
(metric sums) or takes the first one (counters every replica computes alike), so the host loop
reads them once per loop instead of synchronising every step.
"""
import tensorflow as tf


class MetricSums:
  """Named float32 sums, one copy per replica, summed over replicas when read."""

  def __init__(self, shapes: dict):
    self._vars = {
        name: tf.Variable(
            tf.zeros(shape, tf.float32),
            trainable=False,
            synchronization=tf.VariableSynchronization.ON_READ,
            aggregation=tf.VariableAggregation.SUM,
            name=f"sum_{name}") for name, shape in shapes.items()
    }

  def add(self, values: dict):
    """Called in replica context."""
    for name, value in values.items():
      self._vars[name].assign_add(tf.cast(value, tf.float32))

  def read(self) -> dict:
    """Called in cross-replica context: returns numpy sums over all replicas (and hosts)."""
    return {name: v.read_value().numpy() for name, v in self._vars.items()}

  def reset(self):
    for name, v in self._vars.items():
      v.assign(tf.zeros_like(v.read_value()))


def replica_local_int(value: int, name: str) -> tf.Variable:
  """An int64 scalar that each replica updates on its own copy; reads give the first replica's.

  Used for values every replica computes alike (the step, counters of non-finite steps): each
  replica writes its own copy, so keeping them costs no cross-replica traffic, and the copies
  stay equal because every replica runs every step on the same all-reduced numbers. Checkpoints
  save the first copy and restore it into all of them.
  """
  return tf.Variable(
      tf.constant(value, tf.int64), trainable=False,
      synchronization=tf.VariableSynchronization.ON_READ,
      aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA, name=name)


def create_step_counter() -> tf.Variable:
  """The train step counter; create it in strategy.scope().

  Advanced by each replica inside the replica step, as Orbit does, instead of being written
  from the host loop: a mirrored counter written there is broadcast from the first device at
  every step. It is the whole random state of a run (noise, shuffling, binarisation).
  """
  return replica_local_int(0, "step")



"""Input elements that carry k train steps' batches (config.steps_per_element).

A host's pipeline gives per-replica batches in stream order, and the distributed iterator deals
its elements to the host's R replicas in turn: with one batch per element, step s takes stream
batches s*R .. s*R+R-1, replica r the batch s*R + r. With k batches per element, replica r's
element for steps g*k .. g*k+k-1 must hold the batches (g*k + i)*R + r, i = 0..k-1, so that every
step still takes the batches it took with k = 1. Both streams make k*R consecutive batches at a
time, stacked [k*R, B, ...]; `per_replica` turns that into R elements of [k, B, ...], in the
order the iterator deals them.
"""
import tensorflow as tf


def per_replica(stacked, *, steps: int, replicas: int) -> tf.data.Dataset:
  """A structure of [steps*replicas, B, ...] tensors -> a dataset of `replicas` elements.

  Element r holds, for each value, rows r, r+R, r+2R, ... of the stack: [steps, B, ...].
  """

  def regroup(x):
    x = tf.reshape(x, [steps, replicas, *x.shape[1:]])
    return tf.transpose(x, [1, 0, *range(2, x.shape.rank)])

  return tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(regroup, stacked))


def from_batches(batches: tf.data.Dataset, *, steps: int, replicas: int) -> tf.data.Dataset:
  """A stream of per-replica batches (stream order) -> its stream of k-step elements.

  The stream must start at a step's first batch (a multiple of `replicas` batches in).
  """
  groups = batches.batch(steps * replicas, drop_remainder=True)
  if replicas == 1:  # Already in order: [k, B, ...] is the element.
    return groups
  return groups.flat_map(lambda stacked: per_replica(stacked, steps=steps, replicas=replicas))

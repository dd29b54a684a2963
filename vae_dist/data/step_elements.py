"""Input elements that carry k train steps' batches (config.steps_per_element).

A host's pipeline gives per-replica batches in stream order, and the distributed iterator deals
its elements to the host's R replicas in turn: with one batch per element, step s takes stream
batches s*R .. s*R+R-1, replica r the batch s*R + r. With k batches per element, replica r's
element for steps g*k .. g*k+k-1 must hold the batches (g*k + i)*R + r, i = 0..k-1, so that every
step still takes the batches it took with k = 1. Both streams make k*R consecutive batches at a
time, stacked [k*R, B, ...]; `per_replica` turns that into R elements of [k, B, ...], in the
order the iterator deals them. `steps_per_element` chooses k when the config leaves it at 0.
"""
import ml_collections
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


# What config.steps_per_element=0 lets one element carry: enough steps that the per-element
# costs (tf.data's one-thread stages and the distributed iterator dealing elements to the
# replicas: 90-115 us an element here with 4-8 replicas, BUILD_NOTES.md) shrink to a small share
# of a small batch, and little enough device memory that every replica's transfer buffers stay
# negligible. Only small batches gain: an element of k batches costs two more copies of its
# pixels (stacking, dealing), which from ~0.75 MB per batch cost more than they save (128 px,
# batch 16 or 32: 0.62-0.84x the steps/s of k=1; 64 px, 196-393 KB: 1.2-1.8x).
MAX_AUTO_STEPS_PER_ELEMENT = 64
MAX_AUTO_ELEMENT_BYTES = 4 * 2**20
MAX_AUTO_BATCH_BYTES = 512 * 2**10
# cache='device': an element is row numbers (4 bytes an image), copied nowhere but to the
# replica's buffer, so the whole host loop travels as one element (steps_per_loop is at most
# 1,000 when chosen) and the per-element cost is paid once a loop.
MAX_AUTO_ROW_STEPS_PER_ELEMENT = 1000


def steps_per_element(config: ml_collections.ConfigDict, per_replica_batch: int) -> int:
  """Train steps one input element carries (config.steps_per_element; 0 chooses).

  The choice divides steps_per_loop, so every full host loop takes whole elements.
  """
  if config.steps_per_element > 0:
    return config.steps_per_element
  if config.cache == "device":  # int32 row numbers.
    return _largest_divisor(config.steps_per_loop, MAX_AUTO_ROW_STEPS_PER_ELEMENT,
                            per_replica_batch * 4)
  feed_bytes = 4 if config.feed_dtype == "float32" else 1
  batch_bytes = per_replica_batch * config.image_size**2 * config.channels * feed_bytes
  if batch_bytes > MAX_AUTO_BATCH_BYTES:
    return 1
  return _largest_divisor(config.steps_per_loop, MAX_AUTO_STEPS_PER_ELEMENT, batch_bytes)


def _largest_divisor(steps_per_loop: int, most: int, step_bytes: int) -> int:
  """The largest k <= most dividing steps_per_loop with k steps in MAX_AUTO_ELEMENT_BYTES."""
  for k in range(min(most, steps_per_loop), 1, -1):
    if steps_per_loop % k == 0 and k * step_bytes <= MAX_AUTO_ELEMENT_BYTES:
      return k
  return 1

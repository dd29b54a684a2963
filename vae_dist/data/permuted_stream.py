"""config.shuffle='full': train batches gathered from a random permutation of the part in memory.

tf.data's shuffle buffer moves one example at a time through one thread, which caps a pipeline
at about 600k images/s whatever the cores (BUILD_NOTES.md, "Input at accelerator speed"). Here
nothing runs per example: the pipeline's part of the train split is held in memory at the model's
size (uint8 [N, S, S, C]) and batch k of the stream, positions k*B .. k*B+B-1, is one gather of
the rows

  index_shuffle(position % N, seed=[config.seed, pipeline, position // N], max_index=N-1)

made by a parallel, deterministic map over batch indices (several small batches per call). Each
epoch (position // N) is a permutation of the part, every example exactly once, drawn anew from
its own seed; a batch that straddles two epochs takes its rows from both. A batch is a pure
function of (seed, pipeline, position), so a resumed run starts at its batch index and sees what
it would have seen, and positions (hence the binarisation seeds) mean what they mean with
shuffle='buffer'.
"""
import math
from typing import Callable

import tensorflow as tf

from vae_dist.data import step_elements

_MAX_BATCHES = 2**40  # "Forever": the train loop decides when to stop.
_GROUP_BYTES = 2**20  # A map call makes batches up to this many pixel bytes together.


def permutation_rows(positions, *, count: int, seed: int, pipeline: int):
  """Rows of the part (of `count` examples) that stream `positions` (int64 [n]) hold.

  The permutation of epoch e is seeded by [seed, pipeline, e]: distinct pipelines and epochs
  draw distinct permutations, and nothing else (batch size, replicas, resume point) enters it.
  """
  positions = tf.convert_to_tensor(positions, tf.int64)
  n = tf.shape(positions)[0]
  seeds = tf.stack([tf.fill([n], tf.constant(seed, tf.int64)),
                    tf.fill([n], tf.constant(pipeline, tf.int64)), positions // count], axis=1)
  # The raw op, because tf.random.experimental.index_shuffle takes two seed words (it pads a
  # constant third): here all three carry something. Same op, same 4 rounds as that wrapper.
  return tf.raw_ops.RandomIndexShuffle(index=positions % count, seed=seeds,
                                       max_index=tf.constant(count - 1, tf.int64), rounds=4)


def batches(images: tf.data.Dataset, *, count: int, batch_size: int, first_batch: int,
            seed: int, pipeline: int, num_parallel_calls: int,
            finish: Callable[[tf.Tensor, tf.Tensor], dict],
            steps_per_element: int = 1, replicas: int = 1,
            finish_group: Callable[[tf.Tensor, tf.Tensor], dict] | None = None
            ) -> tf.data.Dataset:
  """The stream of train batches from batch `first_batch` on, forever.

  Args:
    images: the part's images at the model's size, uint8 [S, S, C] each, in the part's order.
    count: how many there are (N).
    batch_size: B, the per-replica batch.
    first_batch: index of the first batch to give (a resumed run's position / B).
    seed, pipeline: what the permutations are drawn from (config.seed, the input pipeline id).
    num_parallel_calls: batches gathered at once.
    finish: (first position of the batch, uint8 [B, S, S, C]) -> the batch to give.
    steps_per_element, replicas: k > 1 gives elements of k steps' batches for each of the
      host's R replicas (step_elements.py: values stacked [k, B, ...]); one map call makes the
      k*R batches of k steps, and nothing in the pipeline runs per batch. `first_batch` is then
      a multiple of R.
    finish_group: optional, `finish` over a map call's batches at once: (first positions [g],
      their batches [g, B, ...]) -> the values of `finish` stacked [g, ...]. Without it a call
      finishes its g batches one by one (g copies of finish's ops in its graph, which bounds
      the steps/s of small batches: cache='device' gives it).
  """
  # The holder of the part: one element of a tf.data stream, made inside the pipeline by
  # batching the part whole, and handed by flat_map to the batch stream as a function argument.
  # No tensor of images exists outside the pipeline, so none becomes a constant of the
  # dataset's graph (an eager tensor given to from_tensors does, wherever tf.data serialises
  # the graph: auto-sharding, tf.data service; protobuf's limit is 2 GB), and no variable is
  # created, which a strategy's scope would mirror onto every device: the part lives once, on
  # the device the dataset runs on (the host CPU), in every strategy. Batching the part whole
  # copies it once, so building it takes twice the part's bytes for a moment; then once.
  whole = images.batch(count)  # ensure_shape below: a part shorter than `count` is an error.

  image_bytes = math.prod(images.element_spec.shape)
  whole_elements = steps_per_element > 1
  group = (steps_per_element * replicas if whole_elements else
           group_size(batch_size * image_bytes))

  def stream(part):
    part = tf.ensure_shape(part, [count, *part.shape[1:]])

    def gather(g):
      first = (first_batch + g * group) * batch_size
      rows = permutation_rows(first + tf.range(group * batch_size, dtype=tf.int64), count=count,
                              seed=seed, pipeline=pipeline)
      pixels = tf.gather(part, rows)
      if group == 1 and not whole_elements:
        return finish(first, pixels)
      if finish_group is not None:
        return finish_group(first + tf.range(group, dtype=tf.int64) * batch_size,
                            tf.reshape(pixels, [group, batch_size, *pixels.shape[1:]]))
      done = [finish(first + i * batch_size, pixels[i * batch_size:(i + 1) * batch_size])
              for i in range(group)]
      return tf.nest.map_structure(lambda *batch: tf.stack(batch), *done)

    out = tf.data.Dataset.range(_MAX_BATCHES).map(
        gather, num_parallel_calls=num_parallel_calls, deterministic=True)
    if whole_elements and replicas == 1:
      return out  # [k, B, ...]: the element as it is.
    if whole_elements:
      return out.flat_map(lambda stacked: step_elements.per_replica(
          stacked, steps=steps_per_element, replicas=replicas))
    return out if group == 1 else out.flat_map(tf.data.Dataset.from_tensor_slices)

  return whole.flat_map(stream)


def group_size(batch_bytes: int) -> int:
  """Batches made by one call of the map: enough that small batches amortise the call.

  A call of the gather function costs about 45 us whatever its size (measured at 28x28, batch
  128, one core: BUILD_NOTES.md); grouped, batches of 16 came about 2x as fast on one core, and
  batches of 128 1.6-1.9x faster on two cores than on one. Past ~1 MB per batch the copy
  dominates, and stacking a group's batches costs a copy.
  """
  return max(1, min(16, _GROUP_BYTES // max(1, batch_bytes)))

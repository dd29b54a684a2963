"""Examples of a split as the model saw them at evaluation, with their labels and attributes.

Images go through the input pipeline's own eval path (eval_input.eval_dataset_fn: resize,
channels and binarisation seeded by the example's index), so an image here is bit for bit the one
the eval ELBO was computed on. That path keeps only image and label; the labels and attributes
come from a second read of the same split in the same order (shuffle_files=False), with the image
decoding skipped. Other splits (the train split, for concept vectors) are prepared the same way:
dynamic binarisation is then seeded by the example's index in that split, as for the eval split.
"""
from typing import Iterator, Optional, Sequence

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vae_dist.data import eval_input

_BATCH = 64


def num_examples(builder, config: ml_collections.ConfigDict, split: str, limit: int = -1) -> int:
  """Examples in `split`, or in its first `limit` examples when limit > 0."""
  spec = eval_input.eval_split_spec(builder, config, split, limit)
  return builder.info.splits[spec].num_examples


def _features(builder, spec: str) -> tf.data.Dataset:
  """Labels and attributes of the split, in order, without decoding images."""
  features = builder.info.features
  decoders = {"image": tfds.decode.SkipDecoding()} if "image" in features else None
  ds = builder.as_dataset(split=spec, shuffle_files=False, decoders=decoders)

  def pick(index, example):
    # The index keeps the structure non-empty for data sets without labels or attributes.
    out = {"index": index}
    if "label" in features:
      out["label"] = tf.cast(example["label"], tf.int64)
    if "attributes" in features and isinstance(features["attributes"],
                                               tfds.features.FeaturesDict):
      out["attributes"] = {
          name: tf.cast(value, tf.int64)
          for name, value in example["attributes"].items()
          if value.shape.rank == 0
      }
    return out

  return ds.enumerate().map(pick)


def iter_batches(builder, config: ml_collections.ConfigDict, split: str, limit: int = -1,
                 batch_size: int = _BATCH, with_images: bool = True) -> Iterator[dict]:
  """Yields the split's examples in order, in batches of numpy arrays.

  Args:
    builder: the run's prepared TFDS builder.
    config: the run's config.
    split: a split name of the data set (e.g. config.eval_split or config.train_split).
    limit: read only the first `limit` examples when > 0.
    batch_size: examples per batch (the last one may be smaller).
    with_images: False reads only labels and attributes (much faster).

  Yields:
    dicts with 'index' [b] (position in the split), 'image' [b, S, S, C] float32 in [0, 1] (when
    with_images), 'label' [b] (when the data set has labels) and 'attributes' {name: [b]} (when
    it has scalar attributes).
  """
  spec = eval_input.eval_split_spec(builder, config, split, limit)
  count = builder.info.splits[spec].num_examples
  features = _features(builder, spec).batch(batch_size)
  if with_images:
    steps = max(1, -(-count // batch_size))
    images = eval_input.eval_dataset_fn(builder, config, steps, spec=spec,
                                        batch_size=batch_size)(tf.distribute.InputContext())
    features = tf.data.Dataset.zip(images, features)
  for item in tfds.as_numpy(features):
    if with_images:
      padded, out = item
      # Only the last batch is padded, and its padding comes last.
      out["image"] = padded["image"][:len(out["index"])]
    else:
      out = item
    yield out


def take(builder, config: ml_collections.ConfigDict, split: str,
         indices: Sequence[int]) -> dict:
  """The examples at `indices` of the split, in the order given (indices may repeat).

  Returns:
    A dict like one batch of iter_batches.

  Raises:
    IndexError: an index is outside the split.
  """
  indices = [int(i) for i in indices]
  count = num_examples(builder, config, split)
  bad = [i for i in indices if not 0 <= i < count]
  if bad:
    raise IndexError(f"example indices {bad} are outside split '{split}' of {count} examples")
  batches = list(iter_batches(builder, config, split, limit=max(indices) + 1))
  merged = concat(batches)
  return tf.nest.map_structure(lambda a: a[np.asarray(indices, np.int64)], merged)


def concat(batches: Sequence[dict]) -> Optional[dict]:
  """Concatenates batches of iter_batches along the example axis."""
  if not batches:
    return None
  return tf.nest.map_structure(lambda *a: np.concatenate(a, axis=0), *batches)

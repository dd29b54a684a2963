"""tf.data input for evaluation: every example of the eval split exactly once, a pipeline per host.

Whatever the batch and replica count, the last batches are padded with masked examples, and each
example carries fixed latent noise derived from its index, so the eval ELBO does not depend on how
it was computed. Images are brought to the model's size and binarised as the train pipeline does
(input_pipeline.to_model_size, input_pipeline.normalize), from the prepared data (never a cache).
"""
import math
from typing import Optional

import ml_collections
import tensorflow as tf
import tensorflow_datasets as tfds

from vae_dist.data import input_pipeline

AUTOTUNE = tf.data.AUTOTUNE


def _image_and_label(builder):
  has_label = "label" in builder.info.features

  def fn(example):
    label = tf.cast(example["label"], tf.int32) if has_label else tf.constant(-1, tf.int32)
    return example["image"], label

  return fn


def eval_noise(index, config: ml_collections.ConfigDict):
  """The fixed N(0, I) latent noise of eval example `index` (its position in the eval split)."""
  seed = tf.stack([tf.constant(config.seed + 7919, tf.int64), tf.cast(index, tf.int64)])
  return tf.random.stateless_normal([config.latent_dim], seed=seed, alg="philox")


def eval_image(image, index, config: ml_collections.ConfigDict):
  """Eval example `index` as the model sees it: at model size, binarised by its index."""
  return input_pipeline.normalize(input_pipeline.to_model_size(image, config),
                                  input_pipeline.binarize_seed(config, -1, index), config)


def eval_split_spec(builder, config: ml_collections.ConfigDict, split: Optional[str] = None,
                    limit: Optional[int] = None) -> str:
  """The eval split, or its first config.eval_num_examples examples when that is fewer.

  `split` and `limit` read another split (or another number of examples) the same way.
  """
  split = config.eval_split if split is None else split
  limit = config.eval_num_examples if limit is None else limit
  if 0 < limit < builder.info.splits[split].num_examples:
    return f"{split}[:{limit}]"
  return split


def eval_batch_size(config: ml_collections.ConfigDict) -> int:
  return config.batch_size if config.eval_batch_size <= 0 else config.eval_batch_size


def num_eval_steps(builder, config: ml_collections.ConfigDict, num_replicas: int,
                   num_pipelines: int) -> int:
  """Steps that cover the largest pipeline's part of the eval split."""
  per_replica = eval_batch_size(config) // num_replicas
  per_pipeline_step = per_replica * (num_replicas // num_pipelines)
  parts = tfds.even_splits(eval_split_spec(builder, config), n=num_pipelines)
  largest = max(builder.info.splits[p].num_examples for p in parts)
  return max(1, math.ceil(largest / per_pipeline_step))


def eval_dataset_fn(builder, config: ml_collections.ConfigDict, num_steps: int, *,
                    spec: Optional[str] = None, batch_size: Optional[int] = None):
  """Returns dataset_fn(input_context) yielding padded, masked eval batches for num_steps steps.

  Each example carries 'image', 'label', 'mask' (0 for padding), 'eps' (its fixed latent noise)
  and 'index' (its position in the eval split; -1 for padding). `spec` (a split of
  eval_split_spec) and `batch_size` replace the config's eval split and batch: other splits
  prepared exactly as the eval split is.
  """
  spec = eval_split_spec(builder, config) if spec is None else spec
  batch_size = eval_batch_size(config) if batch_size is None else batch_size

  def dataset_fn(ctx: tf.distribute.InputContext):
    per_replica = ctx.get_per_replica_batch_size(batch_size)
    replicas_here = ctx.num_replicas_in_sync // ctx.num_input_pipelines
    parts = tfds.even_splits(spec, n=ctx.num_input_pipelines)
    pid = ctx.input_pipeline_id
    # Index of this part's first example in the whole eval split: parts are contiguous.
    first = sum(builder.info.splits[p].num_examples for p in parts[:pid])
    ds = builder.as_dataset(split=parts[pid], shuffle_files=False)
    ds = ds.map(_image_and_label(builder), num_parallel_calls=AUTOTUNE)

    def prepare(i, image_label):
      image, label = image_label
      index = first + i
      return {"image": eval_image(image, index, config), "label": label,
              "mask": tf.constant(1.0), "eps": eval_noise(index, config),
              "index": tf.cast(index, tf.int64)}

    ds = ds.enumerate().map(prepare, num_parallel_calls=AUTOTUNE)
    pad = tf.data.Dataset.from_tensors({
        "image": tf.zeros([config.image_size, config.image_size, config.channels]),
        "label": tf.constant(-1, tf.int32),
        "mask": tf.constant(0.0),
        "eps": tf.zeros([config.latent_dim]),
        "index": tf.constant(-1, tf.int64),
    }).repeat()
    ds = ds.concatenate(pad).batch(per_replica, drop_remainder=True)
    return input_pipeline.fixed_parallelism(ds.take(num_steps * replicas_here).prefetch(AUTOTUNE))

  return dataset_fn


def image_examples(builder, config: ml_collections.ConfigDict, n: int):
  """The first n eval examples (fewer if the split is smaller), as model inputs and labels."""
  n = min(n, builder.info.splits[config.eval_split].num_examples)
  ds = builder.as_dataset(split=f"{config.eval_split}[:{n}]", shuffle_files=False)
  ds = ds.map(_image_and_label(builder))
  ds = ds.enumerate().map(lambda i, il: (eval_image(il[0], i, config), il[1]))
  images, labels = next(iter(ds.batch(n)))
  return images.numpy(), labels.numpy()

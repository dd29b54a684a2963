"""tf.data input for training, one pipeline per host, and the per-image transforms eval shares.

Each input pipeline reads its own part of the split (whole files through
`tfds.ReadConfig(input_context=...)` when there are enough files, `tfds.even_splits` otherwise),
brings images to the model's size once (cached in memory when that fits), then draws epochs as a
deterministic function of (seed, epoch): a resumed run skips to its position inside the current
epoch and sees exactly the batches it would have seen. Epochs go through tf.data's shuffle buffer
(config.shuffle='buffer') or are permutations drawn a batch at a time (config.shuffle='full',
permuted_stream.py).

Evaluation's input is in eval_input.py.
"""
import os
import time

from absl import logging
import ml_collections
import tensorflow as tf
import tensorflow_datasets as tfds

from vae_dist.data import model_size_cache
from vae_dist.data import permuted_stream
from vae_dist.data import step_elements
from vae_dist.data.sources.common import expand_path
from vae_dist.data.sources.common import first_line
from vae_dist.errors import ConfigError
from vae_dist.errors import DataError

AUTOTUNE = tf.data.AUTOTUNE
_MAX_EPOCHS = 2**40  # "Forever": the train loop decides when to stop.


def fixed_parallelism(ds: tf.data.Dataset) -> tf.data.Dataset:
  """Turns tf.data's autotuning off: AUTOTUNE then means min(16, cores) calls, prefetch grows.

  The autotuning thread sleeps up to a minute between rounds and an iterator's destructor waits
  for it (TF 2.21): with it, 3 of 4 finished runs of configs/fashion_mnist_fast.py took another
  23-58 s to exit. Without it the pipeline measured as fast (28x28, 2 cores: same first pass,
  1.3x faster from the cache), and the exit takes about a second.
  """
  options = tf.data.Options()
  options.autotune.enabled = False
  return ds.with_options(options)


# ---- per-example transforms ---------------------------------------------------------------------


def to_model_size(image, config: ml_collections.ConfigDict):
  """uint8 [H, W, C] with C in {1, 3} -> uint8 [S, S, config.channels] (crop, resize, channels)."""
  if image.shape[-1] == 4:
    # Data sets store RGB, but a TFDS catalog image with alpha is composited on white here too.
    rgb = tf.cast(image[..., :3], tf.float32)
    alpha = tf.cast(image[..., 3:], tf.float32) / 255.0
    image = tf.cast(tf.round(rgb * alpha + 255.0 * (1.0 - alpha)), tf.uint8)
  channels = image.shape[-1]
  if channels == 3 and config.channels == 1:
    image = tf.image.rgb_to_grayscale(image)
  elif channels == 1 and config.channels == 3:
    image = tf.image.grayscale_to_rgb(image)
  if config.crop == "center":
    shape = tf.shape(image)
    side = tf.minimum(shape[0], shape[1])
    image = tf.image.crop_to_bounding_box(image, (shape[0] - side) // 2, (shape[1] - side) // 2,
                                          side, side)
  size = config.image_size
  if image.shape[0] != size or image.shape[1] != size:
    image = tf.image.resize(image, [size, size], method=config.resize_method, antialias=True)
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
  return tf.ensure_shape(image, [size, size, config.channels])


def normalize(image_uint8, seed_pair, config: ml_collections.ConfigDict, block=None):
  """uint8 -> float32 in [0, 1], binarised as configured (one image or a batch).

  `seed_pair` (int64 [2]) seeds the dynamic binarisation draw, so the same position of the stream
  is binarised the same way on every run and after every resume. `block` = (rows, first row): a
  batch that is part of a larger block drawn whole from `seed_pair` (a replica's share of its
  host's batch), so the draw of an example does not depend on how the block is split.
  """
  x = tf.cast(image_uint8, tf.float32) / 255.0
  if config.binarize == "static":
    x = tf.cast(x > 0.5, tf.float32)  # The tutorial's threshold.
  elif config.binarize == "dynamic":
    if block is None:
      u = tf.random.stateless_uniform(tf.shape(x), seed=seed_pair, alg="philox")
    else:
      rows, first = block
      first = tf.cast(first, tf.int32)
      shape = tf.shape(x)
      u = tf.random.stateless_uniform(tf.concat([[rows], shape[1:]], 0), seed=seed_pair,
                                      alg="philox")[first:first + shape[0]]
    x = tf.cast(u < x, tf.float32)
  return x


def host_images(image_uint8, seed_pair, config: ml_collections.ConfigDict, block=None):
  """A train batch as it leaves the host: uint8 (config.feed_dtype='uint8') or float32.

  uint8 is a quarter of float32's bytes to the device (196 KB instead of 786 KB per 256x256x3
  image) and spares the host the float conversion, which cost 6x the rest of a memory-cached
  batch here. Binarised images travel as uint8 0/1: the draw stays on the host, so it is the
  same on every device. model_input (at the top of the train step) finishes the job, giving
  exactly what normalize gives.
  """
  if config.feed_dtype == "float32":
    return normalize(image_uint8, seed_pair, config, block)
  if config.binarize == "none":
    return image_uint8
  return tf.cast(normalize(image_uint8, seed_pair, config, block), tf.uint8)


def model_input(images, config: ml_collections.ConfigDict):
  """The train step's first op: host_images' batch -> float32 in [0, 1], as normalize gives it.

  Float batches (config.feed_dtype='float32', or callers feeding their own) pass unchanged.
  """
  if images.dtype != tf.uint8:
    return images
  x = tf.cast(images, tf.float32)
  return x / 255.0 if config.binarize == "none" else x


def row_element(rows, seed, first) -> dict:
  """cache='device': what the pipeline gives a replica for one step, instead of its batch.

  rows: the part's rows the batch is made of (int32 [B]); seed, first: what host_images takes to
  binarise them (the draw's seed pair, the batch's first row in its host-batch block). The
  replica turns it into the batch: device_data.batch_images.
  """
  return {"rows": tf.cast(rows, tf.int32), "seed": seed, "first": tf.cast(first, tf.int32)}


def binarize_seed(config, stream, position):
  """The seed pair of the draw at `position` (int64 [2]; [n, 2] for n positions)."""
  # Distinct streams (train pipelines; eval is -1) never share a seed.
  position = tf.cast(position, tf.int64)
  base = tf.constant(config.seed, tf.int64) * 1_000_003 + tf.cast(stream, tf.int64) * 7_777
  return tf.stack([tf.broadcast_to(base, tf.shape(position)), position], axis=-1)


# ---- reading ------------------------------------------------------------------------------------


def check_splits(builder, config: ml_collections.ConfigDict) -> None:
  """The train and eval splits exist, hold examples, and the train split fills a batch.

  Raises:
    ConfigError: a split name the data set does not have, or a batch larger than the split.
    DataError: an empty split.
  """
  sizes = {}
  for field in ("train_split", "eval_split"):
    name = config[field]
    try:
      sizes[field] = builder.info.splits[name].num_examples
    except (KeyError, ValueError, AssertionError):
      raise ConfigError(field, f"{name!r} is not a split of data set '{config.dataset}', which "
                        f"has {', '.join(sorted(builder.info.splits.keys()))}.") from None
    if sizes[field] == 0:
      raise DataError(f"Data set '{config.dataset}': split '{name}' has no examples "
                      f"(data dir: {builder.data_dir}).")
  if sizes["train_split"] < config.batch_size:
    raise ConfigError("batch_size", f"{config.batch_size} is more than the "
                      f"{sizes['train_split']} examples of split '{config.train_split}'.")


def _train_file_instructions(builder, config, ctx: tf.distribute.InputContext):
  """This pipeline's part of the train split as TFDS reads it.

  Whole files per pipeline (each host reads only its own files) when there are at least as many
  files as pipelines, else a contiguous part of the split (tfds.even_splits).

  Returns:
    (sub-split to read, ReadConfig or None, its FileInstructions in TFDS' order, example count).
  """
  split = config.train_split
  num_shards = builder.info.splits[split].num_shards
  pipelines = ctx.num_input_pipelines
  if pipelines > 1 and num_shards >= pipelines:
    read_config = tfds.ReadConfig(input_context=ctx, shuffle_seed=config.seed)
    # TFDS deals the files round-robin (a tf.data shard of the file list).
    instructions = builder.info.splits[split].file_instructions[ctx.input_pipeline_id::pipelines]
    return split, read_config, instructions, sum(fi.take for fi in instructions)
  sub = tfds.even_splits(split, n=pipelines)[ctx.input_pipeline_id] if pipelines > 1 else split
  return (sub, None, builder.info.splits[sub].file_instructions,
          builder.info.splits[sub].num_examples)


def _read_train_shard(builder, config, part, cache: str):
  """This pipeline's part of the train split at the model's size, and how to decode a batch.

  From the prepared data (decoded and resized as it is read: uint8 images) or from the model-size
  cache on disk (raw byte strings, decoded a batch at a time), which gives the same images in the
  same order.

  Returns:
    (dataset of images or byte strings, batch of those -> uint8 [batch, S, S, C]).
  """
  sub, read_config, instructions, _ = part
  if cache == "disk":
    try:
      shape = [config.image_size, config.image_size, config.channels]
      return (_read_disk_cache(builder, config, instructions),
              lambda records: model_size_cache.decode_batch(records, shape))
    except DataError as e:
      if config.cache not in ("auto", "device"):
        raise
      # The disk was chosen only to save time: a run that worked without a cache still does.
      logging.warning("%s Decoding every epoch instead.", e)
  ds = builder.as_dataset(split=sub, shuffle_files=False, read_config=read_config)
  return (ds.map(lambda example: to_model_size(example["image"], config),
                 num_parallel_calls=parallel_calls(config)), lambda images: images)


def _read_disk_cache(builder, config, instructions):
  """Builds this pipeline's missing cache files (once per data set and size), then reads them."""
  folder = disk_cache_folder(builder, config)
  files = sorted({fi.filename for fi in instructions})
  t0 = time.perf_counter()
  try:
    written = model_size_cache.build(folder, builder, config.train_split, files,
                                     lambda image: to_model_size(image, config),
                                     num_threads=usable_cores())
  except (tf.errors.OpError, OSError) as e:
    raise DataError(f"Model-size cache {folder}: cannot write it ({first_line(e)}); make the "
                    "folder writable, set config.cache_dir to a writable folder, or set "
                    "config.cache='none'.") from None
  model_size_cache.log_build(folder, written, time.perf_counter() - t0)
  cycle, block = model_size_cache.reader_order(builder)
  return model_size_cache.read(folder, instructions,
                               [config.image_size, config.image_size, config.channels],
                               cycle_length=cycle, block_length=block,
                               num_parallel_calls=parallel_calls(config))


def disk_cache_folder(builder, config: ml_collections.ConfigDict) -> str:
  """Where the train split's model-size images live on disk for this config."""
  return model_size_cache.cache_folder(
      builder, config.train_split, image_size=config.image_size, channels=config.channels,
      crop=config.crop, resize_method=config.resize_method,
      root=expand_path(config.cache_dir))


def parallel_calls(config: ml_collections.ConfigDict) -> int:
  """Elements the train pipeline's parallel stages work on at once (config.input_parallelism).

  0 means one per usable core. tf.data's AUTOTUNE would mean at most 16 here, because the
  pipeline runs with autotuning off (see fixed_parallelism): too few for a TPU host's 200+ cores.
  """
  return config.input_parallelism if config.input_parallelism > 0 else usable_cores()


def usable_cores() -> int:
  """Cores this process may run on (its CPU affinity, which taskset and containers narrow)."""
  try:
    return max(1, len(os.sched_getaffinity(0)))
  except AttributeError:  # Not on Linux.
    return max(1, os.cpu_count() or 1)


def part_bytes(config: ml_collections.ConfigDict, num_examples: int) -> int:
  """Bytes of num_examples train images at the model's size (uint8)."""
  return num_examples * config.image_size**2 * config.channels


def _cache_decision(config, num_examples):
  """('memory' | 'disk' | 'none', bytes at model size) for this pipeline's train examples.

  'auto' keeps the images in memory when they fit in config.cache_max_bytes, else on disk.
  """
  nbytes = part_bytes(config, num_examples)
  if config.cache == "device":
    return "device", nbytes
  if config.cache != "auto":
    return config.cache, nbytes
  return ("memory" if nbytes <= config.cache_max_bytes else "disk"), nbytes


def _full_shuffle_error(config, nbytes) -> ConfigError:
  return ConfigError("shuffle", f"'full' holds each input pipeline's part of the train split in "
                     f"memory, but cache='auto' keeps a part of {nbytes / 2**20:,.0f} MB on disk "
                     f"(over cache_max_bytes={config.cache_max_bytes}); set config.cache='memory' "
                     "or a larger config.cache_max_bytes if the host holds it, or "
                     "config.shuffle='buffer'.")


def check_shuffle(builder, config: ml_collections.ConfigDict, num_pipelines: int) -> None:
  """shuffle='full' can hold every pipeline's part in memory (cache 'auto' decides by size).

  Checked before the run starts, by every host for every part, so all hosts stop alike.
  checks.validate has already refused 'full' with cache 'disk' or 'none'.

  Raises:
    ConfigError: naming config.shuffle.
  """
  if config.shuffle != "full":
    return
  for pipeline in range(num_pipelines):
    ctx = tf.distribute.InputContext(num_input_pipelines=num_pipelines,
                                     input_pipeline_id=pipeline, num_replicas_in_sync=num_pipelines)
    cache, nbytes = _cache_decision(config, _train_file_instructions(builder, config, ctx)[3])
    if cache not in ("memory", "device"):
      raise _full_shuffle_error(config, nbytes)


def _read_whole_part(builder, config, part, nbytes):
  """cache='device': this pipeline's part at the model's size, one uint8 [N, S, S, C] tensor.

  In the order the other caches give it (so row i is the example they call i), read from the
  model-size cache on disk when the part is over cache_max_bytes (built once, as cache='disk'
  builds it), else decoded from the prepared data. Made where the strategy builds this host's
  pipeline (its CPU).
  """
  ds, decode_batch = _read_train_shard(builder, config, part,
                                       "disk" if nbytes > config.cache_max_bytes else "none")
  return decode_batch(ds.batch(part[3]).get_single_element())


def train_dataset_fn(builder, config: ml_collections.ConfigDict, start_step: int,
                     steps_per_element: int = 1, device_parts=None):
  """Returns dataset_fn(input_context) for strategy.distribute_datasets_from_function.

  Args:
    builder: a prepared TFDS builder with an 'image' feature.
    config: the run's config.
    start_step: train steps already taken (a resumed run starts there).
    steps_per_element: k. 1: each element is one step's per-replica batch, {"image": [B, ...]}.
      k > 1: each element holds the next k of those batches, {"image": [k, B, ...]}; the batches
      are those of k=1, in the same order.
    device_parts: with config.cache='device', a device_data.HostParts that receives each
      pipeline's part of the train split; the elements are then row_element's
      (stacked [k, ...] for k > 1) instead of {"image": ...}.
  """
  if config.cache == "device" and device_parts is None:
    raise ValueError("cache='device' needs device_parts to hand the images to the devices")

  def dataset_fn(ctx: tf.distribute.InputContext):
    per_replica = ctx.get_per_replica_batch_size(config.batch_size)
    replicas_here = ctx.num_replicas_in_sync // ctx.num_input_pipelines
    part = _train_file_instructions(builder, config, ctx)
    count = part[3]
    if count < per_replica:
      raise DataError(f"Input pipeline {ctx.input_pipeline_id} has {count} train examples of "
                      f"'{config.dataset}', fewer than one per-replica batch ({per_replica}); "
                      "use a smaller config.batch_size.")
    cache, nbytes = _cache_decision(config, count)
    if config.shuffle == "full" and cache not in ("memory", "device"):
      raise _full_shuffle_error(config, nbytes)  # Before any cache is built for nothing.
    if cache == "device":
      # The images go to the devices; the stream below is of row numbers, the same stream the
      # images would make (shuffles and gathers do not look at what they move).
      device_parts.add(_read_whole_part(builder, config, part, nbytes))
      ds = tf.data.Dataset.range(count).map(lambda row: tf.cast(row, tf.int32))
    else:
      ds, decode_batch = _read_train_shard(builder, config, part, cache)
    where = {"memory": "cached in memory",
             "disk": f"read from the model-size cache in {disk_cache_folder(builder, config)}",
             "none": "not cached (decoded every epoch)",
             "device": "held by each replica's device (row numbers as input)"}[cache]
    logging.info("Input pipeline %d/%d: %d train examples, %.1f MB at model size; %s; "
                 "shuffle=%s; %d step%s per element.", ctx.input_pipeline_id,
                 ctx.num_input_pipelines, count, nbytes / 2**20, where, config.shuffle,
                 steps_per_element, "" if steps_per_element == 1 else "s")
    pipeline = ctx.input_pipeline_id
    consumed = start_step * replicas_here * per_replica
    # Binarisation (and, with feed_dtype='float32', scaling) on whole batches, vectorised; with
    # feed_dtype='uint8' the step scales (model_input). The dynamic draw is made for the host's
    # whole batch (all its replicas' shares, which start at multiples of host_batch in the
    # stream), seeded by its first position; each replica's batch takes its rows. So an example
    # is binarised alike on 1, 2 or 8 replicas of the host, and alike with either shuffle.
    host_batch = replicas_here * per_replica

    def finish_images(position, images):
      first = position % host_batch
      seed = binarize_seed(config, pipeline, position - first)
      return {"image": host_images(decode_batch(images), seed, config, block=(host_batch, first))}

    def finish_rows(position, rows):
      # Vector ops only: one call finishes one batch or (position [g], rows [g, B]) a group.
      first = position % host_batch
      return row_element(rows, binarize_seed(config, pipeline, position - first), first)

    # (position, batch) -> the element; finish_group finishes a group of batches at once.
    finish, finish_group = ((finish_rows, finish_rows) if cache == "device" else
                            (finish_images, None))

    calls = parallel_calls(config)
    depth = config.prefetch_batches if config.prefetch_batches > 0 else AUTOTUNE
    if config.shuffle == "full":
      # consumed is a batch multiple: the resumed stream starts at a batch boundary.
      out = permuted_stream.batches(ds, count=count, batch_size=per_replica,
                                    first_batch=consumed // per_replica, seed=config.seed,
                                    pipeline=pipeline, num_parallel_calls=calls, finish=finish,
                                    steps_per_element=steps_per_element,
                                    replicas=replicas_here, finish_group=finish_group)
      return fixed_parallelism(out.prefetch(depth))
    if cache == "memory":
      ds = ds.cache()

    def one_epoch(epoch):
      # The shuffle order of epoch e depends only on (seed, pipeline, e): resumable by position.
      # tf.data would also mix in TensorFlow's global seed (and with a global seed of 0 it cannot
      # take a seed tensor at all); this function's graph drops it.
      tf.compat.v1.get_default_graph().seed = None
      seed = tf.constant(config.seed, tf.int64) * 1_000_003 + pipeline * 7_777 + epoch
      return ds.shuffle(config.shuffle_buffer, seed=seed, reshuffle_each_iteration=False)

    start_epoch, offset = divmod(consumed, count)
    out = tf.data.Dataset.range(start_epoch, _MAX_EPOCHS).flat_map(one_epoch).skip(offset)
    # Batches are copied together in parallel (at 256x256 a batch of 128 is a 25 MB copy); the
    # order and contents stay those of the sequential batch.
    out = out.batch(per_replica, drop_remainder=True, num_parallel_calls=calls,
                    deterministic=True)
    # Positions in this pipeline's stream, counted from its very start: a resumed run skips to
    # the same position, and batches keep the same boundaries (consumed is a batch multiple).
    # Batches are counted, not examples: a per-example count is one more stage on one thread,
    # which bounds the 28x28 recipes (BUILD_NOTES.md).
    out = out.enumerate().map(lambda i, images: finish(consumed + i * per_replica, images),
                              num_parallel_calls=calls, deterministic=True)
    if steps_per_element > 1:
      out = step_elements.from_batches(out, steps=steps_per_element, replicas=replicas_here)
    return fixed_parallelism(out.prefetch(depth))

  return dataset_fn

"""Every config field with its default: the one place that says what a config can hold.

Config files under `configs/` start from `base_config()` and change a few fields. The returned
ConfigDict is locked by `main`, so an override of a field that is not listed here fails with the
field's name.
"""
import math

import ml_collections


def conv_stack(*, filters, kernel_sizes, strides, padding, norm, activation):
  """A list of conv layers described field by field (one entry per layer)."""
  return ml_collections.ConfigDict(
      dict(
          filters=list(filters),
          kernel_sizes=list(kernel_sizes),
          strides=list(strides),
          padding=padding,  # 'same' | 'valid'
          norm=norm,  # 'none' | 'batch'
          activation=activation,  # 'relu' | 'leaky_relu' | 'gelu' | 'swish'
      ))


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "vae"  # Run name; the default workdir is runs/<name>.

  # Data.
  c.dataset = "fashion_mnist"  # A TFDS name, 'cartoon_set' or 'image_folder'.
  c.dataset_config = ""  # TFDS builder config, e.g. '10k' for cartoon_set.
  c.data_dir = ""  # TFDS data dir (local or gs://); '' means TFDS' default.
  c.manual_dir = ""  # Archives or IDX files downloaded by hand.
  c.image_folder = ""  # Root folder for dataset='image_folder'.
  c.train_split = "train"
  c.eval_split = "test"
  c.image_size = 28  # Square images of image_size x image_size after crop and resize.
  c.channels = 1  # 1 (grayscale) or 3 (RGB): the data is converted to this.
  c.crop = "none"  # 'none' | 'center' (largest centred square before resizing).
  c.resize_method = "bilinear"
  c.binarize = "none"  # 'none' | 'static' (threshold 0.5) | 'dynamic' (Bernoulli draw).
  # How each epoch is ordered: 'buffer' (tf.data's shuffle buffer of shuffle_buffer examples,
  # one example at a time on one thread) | 'full' (a uniform random permutation of the host's
  # part, drawn a batch at a time in parallel: needs the part in memory, cache 'memory' or
  # 'auto' resolving to memory; for accelerator hosts, BUILD_NOTES.md "Input at accelerator speed").
  c.shuffle = "buffer"
  c.shuffle_buffer = 10_000  # Used by shuffle='buffer'.
  # Train images at the model's size: 'auto' (in memory when they fit in cache_max_bytes, else
  # on disk) | 'memory' | 'disk' (decoded once per data set and size, kept next to the prepared
  # data and shared by every host and later run) | 'none' (decoded every epoch) | 'device' (a
  # copy of the host's part in each replica's device memory; the input carries row numbers:
  # for accelerator hosts whose chips hold it, BUILD_NOTES.md "config.cache='device'").
  c.cache = "auto"
  c.cache_max_bytes = 2 * 1024**3
  c.cache_dir = ""  # Where cache='disk' keeps them; '' = <data_dir>/model_size_cache.
  c.input_parallelism = 0  # Train images decoded/read/batched at once per host; 0 = every core.
  c.prefetch_batches = 0  # Batches prepared ahead of the train step per host; 0 = tf.data's own.
  # Train steps whose per-replica batches travel together as one input element (one tf.data
  # element, one host-to-device transfer), so the pipeline's per-element costs are paid once
  # for k steps; the batches and their order are the same for every k. 0: for per-replica
  # batches up to 512 KiB, the largest divisor of steps_per_loop up to 64 whose element stays
  # within 4 MiB; larger batches travel alone; with cache='device' (row numbers) the largest
  # divisor up to 1,000 (the whole host loop). A value > 0 must divide steps_per_loop.
  c.steps_per_element = 0
  # Train batches to the device as 'uint8' (scaled to float at the top of the step: a quarter of
  # the bytes, no float work on the host) or 'float32' (scaled on the host). Same values either way.
  c.feed_dtype = "uint8"
  c.skip_corrupt_images = False
  c.eval_num_examples = -1  # -1: the whole eval split.

  # Model.
  c.latent_dim = 2
  c.encoder = conv_stack(
      filters=[32, 64],
      kernel_sizes=[3, 3],
      strides=[2, 2],
      padding="valid",
      norm="none",
      activation="relu")
  # The decoder starts from a dense layer reshaped to
  # (image_size / prod(strides), same, initial_channels); its last layer is the output layer
  # (no norm, no activation: logits for Bernoulli, sigmoid means for Gaussian).
  c.decoder = conv_stack(
      filters=[64, 32, 1],
      kernel_sizes=[3, 3, 3],
      strides=[2, 2, 1],
      padding="same",
      norm="none",
      activation="relu")
  c.decoder.initial_channels = 32
  c.decoder.dense_activation = "relu"

  # Objective.
  c.likelihood = "bernoulli"  # 'bernoulli' | 'gaussian'
  # Gaussian likelihood has a fixed variance sigma^2 = D / (2 * weight) for D pixel values, so its
  # reconstruction term is weight * mean squared error plus a constant (the recipes' "1000 x MSE").
  c.gaussian_mse_weight = 1000.0
  c.beta = 1.0  # KL weight for training; evaluation always reports the true ELBO (beta = 1).
  c.kl_warmup_steps = 0  # Linear warm-up of the KL weight from 0 to beta.

  # Optimisation.
  c.batch_size = 128  # Global batch, over all replicas and hosts.
  c.eval_batch_size = -1  # -1: same as batch_size.
  c.num_epochs = 10
  c.num_train_steps = -1  # > 0 overrides num_epochs.
  c.optimizer = "adam"  # 'adam' | 'adamw' | 'sgd'
  c.learning_rate = 5e-4
  c.lr_schedule = "constant"  # 'constant' | 'cosine'
  c.warmup_steps = 0
  c.weight_decay = 0.0
  c.grad_clip_norm = 0.0  # 0 disables clipping.
  # A step whose loss or gradients are NaN/Inf: 0 stops the run there. N > 0 skips it (no update
  # at all) and stops only at N consecutive ones, so a rare bad batch does not end a long run.
  # mixed_precision='float16' ignores it: its loss scaling skips overflow steps itself.
  c.skip_nonfinite_steps = 0

  # Distribution and speed.
  c.strategy = "auto"  # auto | default | one_device | mirrored | multi_worker_mirrored | tpu
  c.tpu = ""  # TPU name or grpc:// address; the --tpu flag overrides it.
  c.num_cpu_devices = 0  # > 1 splits the host CPU into that many logical devices.
  # Multi-worker: how long a worker waits at start for all the others before it gives up.
  c.cluster_wait_seconds = 600
  # Train steps inside one tf.function call (host loop). 0: the largest that divides every
  # cadence below (their gcd, at most MAX_AUTO_STEPS_PER_LOOP), so that any cadence works
  # without arithmetic. A value > 0 is taken as given, and each cadence must be its multiple.
  c.steps_per_loop = 0
  # XLA for the train step: 'auto' (on for GPUs, off on CPUs where it is slower; TPUs compile
  # every step whatever this says), 'true' or 'false'.
  c.jit_compile = "auto"
  c.mixed_precision = "none"  # 'none' | 'bfloat16' | 'float16'
  c.deterministic = False  # tf.config.experimental.enable_op_determinism()

  # Logging, evaluation, checkpoints.
  c.log_every_steps = 50
  c.eval_every_steps = 1000
  c.checkpoint_every_steps = 1000
  c.max_to_keep = 3  # Most recent checkpoints kept.
  c.keep_every_steps = 0  # Also keep every checkpoint whose step is a multiple of this (0: none).
  c.keep_best = 0  # Also keep the K checkpoints with the best eval ELBO (0: none).
  c.restore_from = ""  # Checkpoint directory or step to start from when the workdir has none.
  c.restore_weights_only = False
  c.num_image_examples = 8  # Reconstructions and samples written at each evaluation.
  c.num_scatter_examples = 1000  # Test latent means in the scatter plot (latent_dim 2).
  c.profile_steps = ()  # (first, last): a profiler trace of those steps, e.g. (100, 110).

  c.seed = 0
  return c


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks a config in place to a run that finishes in seconds: same model family and data."""
  c.batch_size = 8
  c.num_train_steps = 4
  c.steps_per_loop = 0
  c.log_every_steps = 2
  c.eval_every_steps = 4
  c.checkpoint_every_steps = 4
  c.eval_num_examples = 16
  c.shuffle_buffer = 64
  c.num_image_examples = 4
  return c


def tutorial_model(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Sets the TensorFlow CVAE tutorial's data treatment and model on `c`, in place.

  28x28x1 thresholded at 0.5, conv 32/64 stride 2 to a latent of 2, dense 7x7x32 then transposed
  convs 64/32/1, Bernoulli likelihood: 69,989 parameters.
  """
  c.image_size = 28
  c.channels = 1
  c.binarize = "static"
  c.latent_dim = 2
  c.encoder = conv_stack(filters=[32, 64], kernel_sizes=[3, 3], strides=[2, 2], padding="valid",
                         norm="none", activation="relu")
  c.decoder = conv_stack(filters=[64, 32, 1], kernel_sizes=[3, 3, 3], strides=[2, 2, 1],
                         padding="same", norm="none", activation="relu")
  c.decoder.initial_channels = 32  # Dense 7*7*32.
  c.decoder.dense_activation = "relu"
  c.likelihood = "bernoulli"
  return c


# The longest host loop steps_per_loop=0 chooses: long enough to hide a host round trip on an
# accelerator (BUILD_NOTES, "Host loop"), short enough that a stop request waits little.
MAX_AUTO_STEPS_PER_LOOP = 1000

CADENCES = ("log_every_steps", "eval_every_steps", "checkpoint_every_steps")


def auto_steps_per_loop(config: ml_collections.ConfigDict) -> int:
  """The host loop steps_per_loop=0 stands for: the largest divisor of every cadence, capped."""
  common = 0
  for field in CADENCES:
    common = math.gcd(common, max(1, int(config[field])))
  for n in range(min(common, MAX_AUTO_STEPS_PER_LOOP), 0, -1):
    if common % n == 0:
      return n
  return 1

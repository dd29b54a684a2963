"""Checks every config field before anything runs; a bad value is one ConfigError naming it."""
import math

import ml_collections

from vae_dist.errors import ConfigError
from vae_dist.errors import VaeDistError

# Seeds go to numpy (below 2**32) and to TF's stateless ops (int64).
_MAX_SEED = 2**32 - 1


class ConfigArgumentError(VaeDistError, ValueError):
  """`--config=FILE:ARG` with an ARG the config file does not take."""


def check_arg(arg, known, config_file: str) -> None:
  """Refuses a config argument (`configs/x.py:ARG`) that `config_file` does not take.

  Args:
    arg: what get_config received (None when the user gave none).
    known: the arguments the file takes.
    config_file: the file, for the message (its __file__).

  Raises:
    ConfigArgumentError: naming the argument and the known ones.
  """
  if arg is None or arg in known:
    return
  import os  # pylint: disable=g-import-not-at-top
  name = os.path.relpath(config_file) if os.path.isabs(config_file) else config_file
  if name.startswith(".."):
    # A config shipped in the package, named from elsewhere: call it as the user can name it.
    name = os.path.splitext(os.path.basename(config_file))[0]
  raise ConfigArgumentError(
      f"--config={name}:{arg}: {name} takes no argument {arg!r}; it takes "
      f"{', '.join(repr(k) for k in known) or 'none'} (or none, for the full run).")

STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker_mirrored", "tpu")
ACTIVATIONS = ("relu", "leaky_relu", "gelu", "swish", "elu", "tanh", "none")


def _one_of(config, field, choices):
  value = _get(config, field)
  if value not in choices:
    raise ConfigError(field, f"{value!r} is not one of {', '.join(map(repr, choices))}.")


def _get(config, field):
  value = config
  for part in field.split("."):
    value = value[part]
  return value


def _positive(config, field, *, allow=()):
  value = _get(config, field)
  if value in allow:
    return
  if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
    extra = f" (or {', '.join(map(str, allow))})" if allow else ""
    raise ConfigError(field, f"must be a positive number{extra}, got {value!r}.")


def _conv_output(size, kernel, stride, padding):
  if padding == "same":
    return math.ceil(size / stride)
  return (size - kernel) // stride + 1


def _check_stack(config, name):
  stack = config[name]
  n = len(stack.filters)
  if n == 0:
    raise ConfigError(f"{name}.filters", "needs at least one layer.")
  for field in ("kernel_sizes", "strides"):
    if len(stack[field]) != n:
      raise ConfigError(f"{name}.{field}",
                        f"has {len(stack[field])} entries but {name}.filters has {n}.")
    if any(not isinstance(v, int) or v <= 0 for v in stack[field]):
      raise ConfigError(f"{name}.{field}", f"entries must be positive integers, got {stack[field]}.")
  if any(not isinstance(v, int) or v <= 0 for v in stack.filters):
    raise ConfigError(f"{name}.filters", f"entries must be positive integers, got {stack.filters}.")
  _one_of(config, f"{name}.padding", ("same", "valid"))
  _one_of(config, f"{name}.norm", ("none", "batch"))
  _one_of(config, f"{name}.activation", ACTIVATIONS)


def _check_model(config):
  _check_stack(config, "encoder")
  _check_stack(config, "decoder")
  size = config.image_size
  enc = config.encoder
  for i, (k, s) in enumerate(zip(enc.kernel_sizes, enc.strides)):
    size = _conv_output(size, k, s, enc.padding)
    if size < 1:
      raise ConfigError(
          "image_size",
          f"{config.image_size}x{config.image_size} images shrink to nothing at encoder layer {i} "
          f"(kernels {list(enc.kernel_sizes)}, strides {list(enc.strides)}, padding "
          f"{enc.padding!r}); use larger images or fewer/smaller strides.")
  dec = config.decoder
  total_stride = math.prod(dec.strides)
  if config.image_size % total_stride:
    raise ConfigError(
        "image_size",
        f"{config.image_size} is not divisible by the product of decoder.strides "
        f"{list(dec.strides)} = {total_stride}, so the decoder cannot produce that size.")
  if dec.padding != "same":
    raise ConfigError("decoder.padding", "must be 'same' so each layer multiplies the size "
                      "exactly by its stride.")
  if dec.filters[-1] != config.channels:
    raise ConfigError(
        "decoder.filters",
        f"the last layer is the output and must have config.channels = {config.channels} "
        f"filters, got {dec.filters[-1]}.")
  _positive(config, "decoder.initial_channels")
  _one_of(config, "decoder.dense_activation", ACTIVATIONS)


def _floats(value, prefix=""):
  """(field, value) for every float in the config, nested ConfigDicts and lists included."""
  if isinstance(value, (ml_collections.ConfigDict, dict)):
    for key in sorted(value.keys()):
      yield from _floats(value[key], f"{prefix}{key}" if not prefix else f"{prefix}.{key}")
  elif isinstance(value, (list, tuple)):
    for item in value:
      yield from _floats(item, prefix)
  elif isinstance(value, float):
    yield prefix, value


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for the first field that the pipeline cannot use.

  Also resolves steps_per_loop=0 ("follow the cadences") to its value, in place.
  """
  # First, for every field: NaN compares false with every bound below, so it would pass them.
  for field, value in _floats(config):
    if not math.isfinite(value):
      raise ConfigError(field, f"must be a finite number, got {value!r}.")
  seed = config.seed
  if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _MAX_SEED:
    raise ConfigError("seed", f"must be an integer from 0 to {_MAX_SEED}, got {seed!r}.")
  if not config.dataset:
    raise ConfigError("dataset", "is empty; name a TFDS data set, 'cartoon_set' or 'image_folder'.")
  if config.dataset == "image_folder" and not config.image_folder:
    raise ConfigError("image_folder", "must name a folder when dataset='image_folder'.")
  _positive(config, "image_size")
  if config.image_size < 4:
    raise ConfigError("image_size", f"must be at least 4, got {config.image_size}.")
  _one_of(config, "channels", (1, 3))
  _one_of(config, "crop", ("none", "center"))
  _one_of(config, "binarize", ("none", "static", "dynamic"))
  _one_of(config, "likelihood", ("bernoulli", "gaussian"))
  _one_of(config, "cache", ("auto", "memory", "disk", "none", "device"))
  _one_of(config, "feed_dtype", ("uint8", "float32"))
  _one_of(config, "shuffle", ("buffer", "full"))
  if config.shuffle == "full" and config.cache in ("disk", "none"):
    # 'auto' is checked once the data's size is known (input_pipeline.check_shuffle).
    raise ConfigError("shuffle", f"'full' draws batches from this host's part of the train split "
                      f"held in memory, which cache={config.cache!r} does not do; set "
                      "config.cache='memory' (or 'auto' with the part under cache_max_bytes), or "
                      "config.shuffle='buffer'.")
  limit = config.cache_max_bytes
  if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
    raise ConfigError("cache_max_bytes", f"must be an integer >= 0, got {limit!r}.")
  for field in ("input_parallelism", "prefetch_batches"):
    value = config[field]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
      raise ConfigError(field, f"must be an integer >= 0 (0: automatic), got {value!r}.")
  _positive(config, "shuffle_buffer")
  _positive(config, "latent_dim")
  if not isinstance(config.latent_dim, int):
    raise ConfigError("latent_dim", f"must be an integer, got {config.latent_dim!r}.")
  _positive(config, "gaussian_mse_weight")
  if config.beta < 0:
    raise ConfigError("beta", f"must be >= 0, got {config.beta}.")
  if config.kl_warmup_steps < 0:
    raise ConfigError("kl_warmup_steps", f"must be >= 0, got {config.kl_warmup_steps}.")
  _check_model(config)

  _positive(config, "batch_size")
  _positive(config, "eval_batch_size", allow=(-1,))
  _positive(config, "eval_num_examples", allow=(-1,))
  _positive(config, "num_train_steps", allow=(-1,))
  if config.num_train_steps == -1:
    _positive(config, "num_epochs")
  _positive(config, "learning_rate")
  _one_of(config, "optimizer", ("adam", "adamw", "sgd"))
  _one_of(config, "lr_schedule", ("constant", "cosine"))
  if config.warmup_steps < 0:
    raise ConfigError("warmup_steps", f"must be >= 0, got {config.warmup_steps}.")
  if config.grad_clip_norm < 0:
    raise ConfigError("grad_clip_norm", f"must be >= 0, got {config.grad_clip_norm}.")
  skip = config.skip_nonfinite_steps
  if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
    raise ConfigError("skip_nonfinite_steps", f"must be an integer >= 0 (0 stops at the first "
                      f"NaN/Inf step, N skips up to N in a row), got {skip!r}.")

  _one_of(config, "strategy", STRATEGIES)
  _positive(config, "cluster_wait_seconds")
  if config.num_cpu_devices < 0:
    raise ConfigError("num_cpu_devices", f"must be >= 0, got {config.num_cpu_devices}.")
  _one_of(config, "mixed_precision", ("none", "bfloat16", "float16"))
  if str(config.jit_compile).lower() not in ("auto", "true", "false"):
    raise ConfigError("jit_compile", f"{config.jit_compile!r} is not one of 'auto' (XLA on GPUs, "
                      "off on CPUs; TPUs always compile), 'true' or 'false'.")
  for field in ("log_every_steps", "eval_every_steps", "checkpoint_every_steps"):
    _positive(config, field)
  if config.steps_per_loop == 0:
    # The loop length follows the cadences (defaults.auto_steps_per_loop); resolved here,
    # the one check every run passes, so that the run and its config.json see the real value.
    from vae_dist.config import defaults  # pylint: disable=g-import-not-at-top
    config.steps_per_loop = defaults.auto_steps_per_loop(config)
  if config.steps_per_loop < 0:
    raise ConfigError("steps_per_loop", f"must be positive, or 0 to follow the cadences; got "
                      f"{config.steps_per_loop}.")
  if config.steps_per_loop > 2**31 - 1:  # The loop's step count is an int32 tensor.
    raise ConfigError("steps_per_loop", f"must be below 2**31, got {config.steps_per_loop}.")
  for field in ("log_every_steps", "eval_every_steps", "checkpoint_every_steps"):
    if config[field] % config.steps_per_loop:
      raise ConfigError(
          field, f"{config[field]} is not a multiple of steps_per_loop={config.steps_per_loop}; "
          "logs, evaluations and checkpoints happen between host loops (steps_per_loop=0 "
          "makes the loop follow the cadences).")
  value = config.steps_per_element
  if isinstance(value, bool) or not isinstance(value, int) or value < 0:
    raise ConfigError("steps_per_element", f"must be an integer >= 0 (0: automatic), got "
                      f"{value!r}.")
  if value and config.steps_per_loop % value:
    raise ConfigError("steps_per_element", f"{value} does not divide steps_per_loop="
                      f"{config.steps_per_loop}; a host loop takes whole input elements (0 picks "
                      "a divisor itself).")
  if config.max_to_keep < 1:
    raise ConfigError("max_to_keep", f"must be at least 1, got {config.max_to_keep}.")
  if config.profile_steps:
    steps = tuple(config.profile_steps)
    if len(steps) != 2 or not all(isinstance(v, int) for v in steps) or not 0 <= steps[0] < steps[1]:
      raise ConfigError("profile_steps", f"must be (first, last) with 0 <= first < last, got "
                        f"{steps}.")
  for field in ("keep_every_steps", "keep_best", "num_image_examples", "num_scatter_examples"):
    if config[field] < 0:
      raise ConfigError(field, f"must be >= 0, got {config[field]}.")

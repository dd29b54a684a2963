"""A rough lower bound on the memory a training step needs, to refuse impossible runs up front.

An image size or batch the host cannot hold would otherwise end in a ResourceExhaustedError (or
the OOM killer) after the workdir is written. The estimate counts float32 weights with their
gradients and Adam's two slots, and every layer's output for the batch kept for the backward pass
and its gradient; real use is higher (workspace, the input pipeline), so a refusal is certain,
never a guess.
"""
import math

import ml_collections

from vae_dist.errors import ConfigError

_FLOAT_BYTES = 4
_GIB = 1024**3


def _conv_output(size, kernel, stride, padding):
  if padding == "same":
    return math.ceil(size / stride)
  return (size - kernel) // stride + 1


def training_bytes(config: ml_collections.ConfigDict, per_host_batch: int) -> int:
  """Bytes of weights, optimiser state and activations of one train step on one host."""
  size, channels = config.image_size, config.channels
  params = 0
  activations = size * size * channels  # The input.
  enc = config.encoder
  for filters, kernel, stride in zip(enc.filters, enc.kernel_sizes, enc.strides):
    params += kernel * kernel * channels * filters + filters
    size = _conv_output(size, kernel, stride, enc.padding)
    channels = filters
    activations += size * size * channels
  params += size * size * channels * 2 * config.latent_dim  # Flatten -> mean and log-variance.
  dec = config.decoder
  side = config.image_size // math.prod(dec.strides)
  channels = dec.initial_channels
  params += config.latent_dim * side * side * channels
  activations += side * side * channels
  for filters, kernel, stride in zip(dec.filters, dec.kernel_sizes, dec.strides):
    params += kernel * kernel * channels * filters + filters
    side *= stride
    channels = filters
    activations += side * side * channels
  # Weights, gradients and two Adam slots; each activation kept and its gradient.
  return _FLOAT_BYTES * (4 * params + 2 * activations * per_host_batch)


def available_host_bytes():
  """MemAvailable from /proc/meminfo, or None where there is no such file."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    return None
  return None


def check_fits_host(config: ml_collections.ConfigDict, per_host_batch: int) -> None:
  """Refuses a run on host memory (CPU training) that cannot fit in the memory available.

  Raises:
    ConfigError: (image_size) naming the estimate, the memory available and what to change.
  """
  available = available_host_bytes()
  if available is None:
    return
  needed = training_bytes(config, per_host_batch)
  if needed > available:
    raise ConfigError(
        "image_size",
        f"training {config.image_size}x{config.image_size}x{config.channels} images in batches "
        f"of {per_host_batch} per host needs at least {needed / _GIB:.1f} GiB (weights, "
        f"optimiser state and activations) but this machine has {available / _GIB:.1f} GiB "
        "available; use a smaller image_size or batch_size.")

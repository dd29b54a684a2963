"""config.cache='device': the train images in every replica's own memory, row numbers as input.

On an accelerator host the host's input bounds small steps per element, not per image: the
distributed iterator deals each element of the host's pipeline to one replica (90-115 us an
element here, BUILD_NOTES.md). With cache='device' each replica holds its host's part of the
train split at the model's size (uint8 [N, S, S, C], a copy on each of the host's devices, made
once before the first step), and the pipeline carries only which rows each step takes: the
stream of positions, shuffles, epochs and binarisation seeds is the one of the other caches, with
the part's row numbers in place of the images. The step gathers its batch from its own copy and
finishes it as the host would have (input_pipeline.host_images), so it sees bitwise the batch
cache='memory' gives. An element of row numbers is a few bytes a step, so one element carries a
whole host loop (step_elements.steps_per_element).

The row stream's elements are input_pipeline.row_element's.
"""
import ml_collections
import tensorflow as tf

from vae_dist.data import input_pipeline
from vae_dist.errors import ConfigError


def batch_images(part, element: dict, config: ml_collections.ConfigDict, host_batch: int):
  """The batch a step takes: its rows of `part`, binarised and typed as the host pipeline does.

  Runs inside the replica step, on the replica's device (under XLA/TPU, compiled with it).
  """
  return input_pipeline.host_images(tf.gather(part, element["rows"]), element["seed"], config,
                                    block=(host_batch, element["first"]))


def _host(device_name: str) -> tuple:
  spec = tf.DeviceSpec.from_string(device_name)
  return spec.job, spec.replica, spec.task


def _replica_devices(strategy: tf.distribute.Strategy) -> list:
  """This process's replica devices in the order of its local replicas."""
  try:
    return list(strategy.extended.worker_devices)
  except RuntimeError:  # The default strategy: TensorFlow's own placement, first device.
    for kind in ("TPU", "GPU", "CPU"):
      found = tf.config.list_logical_devices(kind)
      if found:
        return [found[0].name]
    raise


class HostParts:
  """The train parts input pipelines read for cache='device', until they are on the devices.

  train_dataset_fn adds a host's part when the strategy builds that host's pipeline (on that
  host's CPU); `place` copies each part to the devices of its host.
  """

  def __init__(self):
    self._parts = {}

  def add(self, images: tf.Tensor) -> None:
    self._parts[_host(images.device)] = images

  def place(self, strategy: tf.distribute.Strategy):
    """One copy of its host's part on each local replica's device, as a per-replica value.

    The host copies are released once placed (on accelerators the part then lives in their
    memory only).

    Raises:
      ConfigError: naming config.cache, when a device cannot hold the part.
    """
    if not self._parts:
      raise ValueError("no part was read: build the train dataset before placing its part")
    devices = _replica_devices(strategy)
    parts, self._parts = self._parts, {}
    copies = []
    for device in devices:
      # One host (every single-host strategy, each multi-worker process) has one part; on a
      # TPU slice driven by one process each host's devices take that host's part.
      part = next(iter(parts.values())) if len(parts) == 1 else parts[_host(device)]
      try:
        with tf.device(device):
          copies.append(tf.identity(part))
      except tf.errors.ResourceExhaustedError:
        raise ConfigError(
            "cache", f"'device' keeps this host's part of the train split ({part.shape[0]:,} "
            f"images, {part.shape.num_elements() / 2**20:,.0f} MB) in the memory of each of its "
            f"{len(devices)} devices, and {device} cannot hold it next to the model; set "
            "config.cache='auto' (the host's memory or disk).") from None
    return strategy.experimental_distribute_values_from_function(
        lambda ctx: copies[ctx.replica_id_in_sync_group % len(copies)])

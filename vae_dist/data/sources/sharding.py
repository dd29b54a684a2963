"""A GeneratorBasedBuilder base that writes enough shards for every host to read its own files.

TFDS picks the number of shards from the data size alone (one shard below 64 MiB), so a 10k
image set would be a handful of files. Multi-host input pipelines shard by file, which needs at
least one file per host; `HostShardedBuilder` writes at least `MIN_SHARDS` per split (or one per
example when a split is smaller). The shard count is decided when a split is finalised, from the
number of examples actually written, so images skipped as corrupt never leave a shard empty.
"""
import dataclasses

import tensorflow_datasets as tfds
from tensorflow_datasets.core.utils import shard_utils

# 32 hosts (for example a v4-64 or v5e-128 TPU slice) each get at least one file.
MIN_SHARDS = 32


@dataclasses.dataclass(frozen=True)
class HostShardConfig(shard_utils.ShardConfig):
  """ShardConfig whose shard count is at least min_num_shards (capped by the example count)."""

  min_num_shards: int = MIN_SHARDS

  def get_number_shards(self, total_size: int, num_examples: int,
                        uses_precise_sharding: bool = True) -> int:
    if self.num_shards:  # Asked for explicitly in the DownloadConfig: obey.
      return self.num_shards
    by_size = super().get_number_shards(total_size, num_examples, uses_precise_sharding)
    return max(1, min(num_examples, max(self.min_num_shards, by_size)))


@dataclasses.dataclass(eq=False)
class _HostShardDownloadConfig(tfds.download.DownloadConfig):
  """DownloadConfig handing HostShardConfig to the split writers."""

  min_num_shards: int = MIN_SHARDS

  def get_shard_config(self) -> shard_utils.ShardConfig:
    return HostShardConfig(
        num_shards=self.num_shards,
        min_shard_size=self.min_shard_size,
        max_shard_size=self.max_shard_size,
        min_num_shards=self.min_num_shards)


class HostShardedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """GeneratorBasedBuilder writing at least MIN_SHARDS shards per split."""

  MIN_SHARDS = MIN_SHARDS

  def _download_and_prepare(self, dl_manager, download_config):
    # GeneratorBasedBuilder builds its split writers from download_config.get_shard_config();
    # swapping in a config that returns HostShardConfig is the one hook TFDS 4.9 offers for this.
    fields = {f.name: getattr(download_config, f.name)
              for f in dataclasses.fields(tfds.download.DownloadConfig)}
    host_config = _HostShardDownloadConfig(**fields, min_num_shards=self.MIN_SHARDS)
    return super()._download_and_prepare(dl_manager=dl_manager, download_config=host_config)

"""The checkpoint room: orbax-style step directories, committed atomically, restored with care.

  layout.py         where a step lives on disk and when it counts as committed
  reader.py         CheckpointReader: list the committed steps, read their metadata, restore
  manager.py        CheckpointManager (a reader that also saves in the background, commits,
                    prunes by retention.py's policy and sets damaged steps aside)
  retention.py      which committed steps a run keeps
  save_errors.py    what a failed save tells the user
  snapshot.py       the frozen copy a background save writes (TensorFlow's private API)
  restore_check.py  restores that fail with a message naming what differs or what is damaged

Callers use the names below.
"""
from vae_dist.checkpointing.layout import COMMIT_MARKER_FILENAME
from vae_dist.checkpointing.layout import is_atomic_rename_filesystem
from vae_dist.checkpointing.layout import METADATA_FILENAME
from vae_dist.checkpointing.layout import state_prefix
from vae_dist.checkpointing.layout import STATE_SUBDIR
from vae_dist.checkpointing.layout import TMP_SUFFIX
from vae_dist.checkpointing.manager import CheckpointManager
from vae_dist.checkpointing.reader import CheckpointReader
from vae_dist.checkpointing.restore_check import restore_checkpoint
from vae_dist.errors import CheckpointError

__all__ = [
    "COMMIT_MARKER_FILENAME", "METADATA_FILENAME", "STATE_SUBDIR", "TMP_SUFFIX",
    "is_atomic_rename_filesystem", "state_prefix", "CheckpointManager", "CheckpointReader",
    "restore_checkpoint", "CheckpointError",
]

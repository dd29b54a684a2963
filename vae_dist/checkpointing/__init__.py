"""The checkpoint room: orbax-style step directories, committed atomically, restored with care.

  layout.py         where a step lives on disk and when it counts as committed
  manager.py        CheckpointManager: save (in the background), commit, list, prune, set aside
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
from vae_dist.checkpointing.restore_check import restore_checkpoint
from vae_dist.errors import CheckpointError

__all__ = [
    "COMMIT_MARKER_FILENAME", "METADATA_FILENAME", "STATE_SUBDIR", "TMP_SUFFIX",
    "is_atomic_rename_filesystem", "state_prefix", "CheckpointManager", "restore_checkpoint",
    "CheckpointError",
]

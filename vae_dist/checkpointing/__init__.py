"""The checkpoint room: orbax-style step directories, committed atomically, restored with care."""
from vae_dist.checkpointing.manager import COMMIT_MARKER_FILENAME
from vae_dist.checkpointing.manager import CheckpointError
from vae_dist.checkpointing.manager import CheckpointManager
from vae_dist.checkpointing.manager import METADATA_FILENAME
from vae_dist.checkpointing.manager import STATE_SUBDIR
from vae_dist.checkpointing.manager import TMP_SUFFIX
from vae_dist.checkpointing.manager import is_atomic_rename_filesystem
from vae_dist.checkpointing.manager import restore_checkpoint
from vae_dist.checkpointing.manager import state_prefix

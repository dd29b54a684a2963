"""Errors that end a run with one message meant for the user, not a traceback.

`main` catches `VaeDistError`, logs its message and exits non-zero; so it does for a write that
fails because storage is full or read-only (describe_storage_failure). Everything else is a bug and
keeps its traceback.
"""
import errno
from typing import Optional

# What a full disk, a quota, a read-only mount or missing permissions look like, as errno values
# (OSError) and as the words TensorFlow's file system layer puts in its messages (OpError).
_STORAGE_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
_STORAGE_WORDS = ("No space left", "File too large", "Disk quota", "Read-only file system",
                  "Permission denied")
# How TensorFlow's GCS client reports an object store that kept failing after its own retries
# (HTTP 5xx, dropped connections): an Aborted/Unavailable/DeadlineExceeded OpError with these words.
_UNREACHABLE_TYPES = ("AbortedError", "UnavailableError", "DeadlineExceededError")
_UNREACHABLE_WORDS = ("retry attempts failed", "Error executing an HTTP request")


class VaeDistError(Exception):
  """Base class: the message alone tells the user what is wrong and what to do."""


class UsageError(VaeDistError):
  """A command-line flag value that is wrong for this run (e.g. an index beyond the split)."""


class ConfigError(VaeDistError):
  """A config field has a value the pipeline cannot use."""

  def __init__(self, field: str, message: str):
    self.field = field
    super().__init__(f"config.{field}: {message}")


class DataError(VaeDistError):
  """A data set is missing, empty or unreadable."""


class WorkdirError(VaeDistError):
  """The workdir cannot be used (not writable, locked by another run, ...)."""


class CheckpointError(WorkdirError):
  """A checkpoint cannot be written (disk full, ...) or does not fit the model being restored."""


class DamagedCheckpointError(WorkdirError):
  """A committed checkpoint whose files do not load (truncated, bit flips, ...)."""


class TrainingError(VaeDistError):
  """Training cannot go on (for example a non-finite loss)."""


def first_line(error: BaseException) -> str:
  """The first line of an error's message (TF's OpError or any exception), for a user message."""
  text = (getattr(error, "message", None) or str(error)).strip()
  return text.splitlines()[0] if text else type(error).__name__


def _last_line(error: BaseException) -> str:
  """TF's GCS messages end with what it was doing ("when initiating an upload to gs://...")."""
  lines = [l.strip() for l in (getattr(error, "message", None) or str(error)).splitlines()]
  return next((l for l in reversed(lines) if l), type(error).__name__)


def describe_storage_failure(error: BaseException) -> Optional[str]:
  """The user's message when `error` is a write refused by storage (full, read-only, ...), else None.

  Such a failure can hit any file of a run (metrics, event files, checkpoints); what the user
  must know is the same each time: what failed, that committed checkpoints are intact, what to do.
  """
  text = getattr(error, "message", None) or str(error)
  if (type(error).__name__ in _UNREACHABLE_TYPES and
      any(word in text for word in _UNREACHABLE_WORDS)):
    return (f"the storage did not answer ({_last_line(error)}, {first_line(error)}). Committed "
            "checkpoints are unchanged; start the same command again to resume once the storage "
            "answers.")
  if isinstance(error, OSError) and error.errno in _STORAGE_ERRNOS:
    what = f"{error.filename}: {error.strerror}" if error.filename else text
  elif any(word in text for word in _STORAGE_WORDS) and not isinstance(error, VaeDistError):
    what = first_line(error)
  else:
    return None
  return (f"a write failed ({what}). Committed checkpoints are unchanged; free space or fix "
          "the permissions, then start the same command again to resume.")


class RunPreempted(Exception):
  """The run saved a checkpoint and stopped early on a preemption notice: not an error, not done.

  `main` exits with preemption.RESTARTABLE_EXIT_CODE so that launchers start it again.
  """

  def __init__(self, step: int):
    self.step = step
    super().__init__(f"stopped at step {step} on a preemption notice")

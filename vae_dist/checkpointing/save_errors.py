"""What a failed checkpoint save tells the user: the OS error, what is still safe, what to do."""
import errno
import os
import re
from typing import Optional

import tensorflow as tf

from vae_dist.errors import CheckpointError

# OS errors a full or limited disk gives, as they appear in TF's messages.
_SPACE_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def reason(error: BaseException) -> tuple:
  """(the OS error in a failed write's message, whether it says the disk or a limit is full).

  TF reports a failed write as "{{function_node ...}} <file>; File too large [Op:SaveV2]":
  the user needs the last part, not the temporary file's name.
  """
  if isinstance(error, CheckpointError) and error.__cause__ is not None:
    error = error.__cause__
  text = error.message if isinstance(error, tf.errors.OpError) else str(error)
  for code in _SPACE_ERRNOS:
    if os.strerror(code) in text:
      return os.strerror(code), True
  if isinstance(error, OSError) and error.strerror:
    return error.strerror, False
  text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
  return re.sub(r"\s*\[Op:\w+\]\s*$", "", text).strip(), False


def write_failure(root: str, step: int, error: BaseException,
                  committed: Optional[list]) -> str:
  """The message for a failed commit of `step` under `root`.

  Args:
    committed: the committed steps (ascending), or None when they could not be listed.
  """
  why, out_of_space = reason(error)
  if committed:
    kept = (f"Committed checkpoints are unchanged: the latest is step {committed[-1]}, where the "
            "run resumes when started again.")
  elif committed is not None:
    kept = "No checkpoint of this run was committed before, so a restart begins anew."
  else:
    kept = "Committed checkpoints were not touched."
  if out_of_space:
    todo = ("Free some space there (or raise the disk quota or file size limit) and start "
            "the run again.")
  else:
    todo = "Make sure the directory is writable and start the run again."
  return f"Could not save checkpoint step {step} in {root}: {why}. {kept} {todo}"

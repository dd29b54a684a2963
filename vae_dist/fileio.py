"""Small file helpers that never leave a half-written file behind (local paths and gs://)."""
import tensorflow as tf


def write_text_atomic(path: str, text: str) -> None:
  """Writes to a temporary name, then renames over `path` (atomic on local filesystems)."""
  tmp = path + ".tmp"
  with tf.io.gfile.GFile(tmp, "w") as f:
    f.write(text)
  tf.io.gfile.rename(tmp, path, overwrite=True)

"""Small file helpers that never leave a half-written file behind (local paths and gs://)."""
import posixpath

import tensorflow as tf


def is_local(path: str) -> bool:
  """Whether `path` is on a local (or NFS) filesystem rather than behind a URL scheme (gs://)."""
  return "://" not in path or path.startswith("file://")


def write_bytes_atomic(path: str, data: bytes) -> None:
  """Writes to a temporary name, then renames over `path` (atomic on local filesystems)."""
  directory = posixpath.dirname(path)
  if directory:
    tf.io.gfile.makedirs(directory)
  tmp = path + ".tmp"
  with tf.io.gfile.GFile(tmp, "wb") as f:
    f.write(data)
  tf.io.gfile.rename(tmp, path, overwrite=True)


def write_text_atomic(path: str, text: str) -> None:
  write_bytes_atomic(path, text.encode("utf-8"))

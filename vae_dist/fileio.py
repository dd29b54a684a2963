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


def rmtree(path: str, *, attempts: int = 3) -> None:
  """Removes the directory tree at `path`, riding out a transient failure on object stores.

  TF's GCS rmtree starts by asking whether `path` is a directory, and reports any failure of that
  listing (a dropped connection, after or without its own retries) as NotFoundError "doesn't exist
  or not a directory". Such an error is retried while the tree still exists; a tree that is gone
  is done.

  Raises:
    tf.errors.OpError: the tree could not be removed.
  """
  for attempt in range(attempts):
    try:
      tf.io.gfile.rmtree(path)
      return
    except tf.errors.NotFoundError:
      if not tf.io.gfile.exists(path):
        return
      if attempt == attempts - 1:
        raise

"""Helpers shared by the data set loaders: paths, error messages and the train/test hold-out."""
import hashlib
import os
from typing import Iterable, Sequence

import tensorflow as tf

from vae_dist import errors

# Share of the examples that goes to the 'test' split of data sets that come without one.
TEST_FRACTION = 0.1


def expand_path(path: str) -> str:
  """Returns `path` with '~' expanded and made absolute; '' and URLs (gs://...) are kept.

  Args:
    path: a local path, a URL such as gs://bucket/dir, or ''.

  Returns:
    The path to hand to TFDS: absolute for local paths, so that messages name the real place.
  """
  if not path:
    return ""
  if is_url(path):
    return path.rstrip("/")
  return os.path.abspath(os.path.expanduser(path))


def is_url(path: str) -> bool:
  """True for paths such as gs://bucket/dir that tf.io.gfile reads, but the os module cannot."""
  return "://" in path


def join(directory: str, *names: str) -> str:
  """os.path.join that also works for gs:// directories (they use '/' on every platform)."""
  if is_url(directory):
    return "/".join([directory.rstrip("/"), *names])
  return os.path.join(directory, *names)


def is_dir(path: str) -> bool:
  """True when `path` is an existing directory, local or remote."""
  return bool(path) and tf.io.gfile.isdir(path)


def is_file(path: str) -> bool:
  """True when `path` is an existing file, local or remote."""
  return bool(path) and tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path)


def default_manual_dir(data_dir_root: str) -> str:
  """The folder TFDS reads manual downloads from when config.manual_dir is ''."""
  return join(str(data_dir_root), "downloads", "manual")


def missing_data_error(dataset: str, looked: Iterable[str], how: Iterable[str],
                       problem: str = "was not found", config: str = "") -> errors.DataError:
  """Builds the one message a user sees when a data set cannot be had.

  Args:
    dataset: the data set's name as the user wrote it in the config.
    looked: every place that was searched, each with what was (not) there.
    how: the ways to get the data, most likely first.
    problem: what went wrong, completing "Data set 'x' ...".
    config: the builder config, if the data set has several.

  Returns:
    A DataError to raise.
  """
  name = f"'{dataset}' (config '{config}')" if config else f"'{dataset}'"
  lines = [f"Data set {name} {problem}.", "Looked in:"]
  lines += [f"  - {place}" for place in looked]
  lines.append("To get it:")
  lines += [f"  - {way}" for way in how]
  return errors.DataError("\n".join(lines))


def first_line(error: BaseException, limit: int = 300) -> str:
  """A short, single-line description of an exception for a user-facing message."""
  text = str(error).strip().splitlines()
  line = text[0] if text else ""
  line = f"{type(error).__name__}: {line}" if line else type(error).__name__
  return line if len(line) <= limit else line[:limit - 3] + "..."


def holdout_split(keys: Sequence[str], test_fraction: float = TEST_FRACTION):
  """Splits keys deterministically into train and test by a hash of each key.

  The keys with the smallest hashes go to test, so the split depends on the file names alone,
  not on the order a folder or an archive lists them in. At least one key goes to test when there
  are two or more, so small folders still get an evaluation split.

  Args:
    keys: unique example keys (file names or relative paths).
    test_fraction: share of the keys that goes to test.

  Returns:
    (train_keys, test_keys), each sorted.
  """
  ranked = sorted(keys, key=lambda k: (hashlib.sha256(k.encode("utf-8")).hexdigest(), k))
  num_test = int(round(len(ranked) * test_fraction))
  if len(ranked) >= 2:
    num_test = min(max(num_test, 1), len(ranked) - 1)
  return sorted(ranked[num_test:]), sorted(ranked[:num_test])

"""Where a checkpoint lives on disk, orbax-style, and how a step is known to be committed.

  <root>/<step>/state/ckpt.index, ckpt.data-*   the train state, written by Checkpoint.write
  <root>/<step>/_CHECKPOINT_METADATA            JSON: step, start/commit timestamps + caller's dict
  <root>/<step>/commit_success.txt              only on filesystems without atomic rename

See manager.py for how steps are written, committed, set aside and pruned.
"""
import json
import re

from absl import logging
import tensorflow as tf

from vae_dist.errors import ConfigError
from vae_dist.errors import WorkdirError
from vae_dist import fileio

STATE_SUBDIR = "state"
STATE_PREFIX_NAME = "ckpt"
METADATA_FILENAME = "_CHECKPOINT_METADATA"
COMMIT_MARKER_FILENAME = "commit_success.txt"
TMP_SUFFIX = ".orbax-checkpoint-tmp"
# A step that cannot be used (incomplete, or damaged so that it does not load) is renamed to
# `<step>.damaged` (`.damaged-2`, ... when that exists): set aside for a look, never deleted, and
# no longer a step, so the run resumes from the newest intact one.
DAMAGED_SUFFIX = ".damaged"

STEP_RE = re.compile(r"^\d+$")
# Matches `<step>.orbax-checkpoint-tmp` and its variants (`.deleting`, `.worker<N>`, ...).
TMP_RE = re.compile(r"^\d+" + re.escape(TMP_SUFFIX))


def is_atomic_rename_filesystem(path: str) -> bool:
  """Whether a directory rename under `path` is atomic (decided by the path's scheme).

  Args:
    path: a local path, a file:// URL or a URL of another filesystem (gs://, ram://, ...).

  Returns:
    True for local paths, where a finished step is committed by renaming its directory.
  """
  return fileio.is_local(path)


def join(*parts: str) -> str:
  """Joins with '/', keeping URLs such as gs://b/x intact."""
  # os.path.join would do on POSIX, but spelling out '/' keeps URLs such as gs:// intact anywhere.
  return "/".join([parts[0].rstrip("/")] + [p.strip("/") for p in parts[1:]])


def state_prefix(step_dir: str) -> str:
  """The tf.train.Checkpoint prefix of the train state inside a step directory."""
  return join(step_dir, STATE_SUBDIR, STATE_PREFIX_NAME)


def read_metadata(step_dir: str) -> dict:
  """Reads `_CHECKPOINT_METADATA` of a step directory.

  Args:
    step_dir: a committed step directory, `<root>/<step>`.

  Returns:
    The decoded JSON: step, start_timestamp, commit_timestamp (seconds since the epoch) and the
    keys of the dict passed to `CheckpointManager.save`.

  Raises:
    WorkdirError: the file is missing or is not valid JSON.
  """
  path = join(step_dir, METADATA_FILENAME)
  try:
    with tf.io.gfile.GFile(path, "r") as f:
      return json.loads(f.read())
  except (tf.errors.OpError, OSError, ValueError) as e:
    raise WorkdirError(f"Cannot read checkpoint metadata {path}: {e}") from e


def committed_steps(root: str) -> list:
  """Committed steps under `root`, sorted; [] when `root` does not exist."""
  try:
    names = tf.io.gfile.listdir(root)
  except tf.errors.NotFoundError:
    return []
  atomic = is_atomic_rename_filesystem(root)
  steps = []
  for name in names:
    name = name.rstrip("/")  # Object stores list "directories" as "5/".
    if not STEP_RE.match(name):
      continue
    step_dir = join(root, name)
    if atomic:
      if is_complete(step_dir):
        steps.append(int(name))
    elif tf.io.gfile.exists(join(step_dir, COMMIT_MARKER_FILENAME)):
      steps.append(int(name))
  return sorted(steps)


def is_complete(step_dir: str) -> bool:
  """Whether a local step directory holds what every commit writes: metadata and the state index.

  A rename commits only whole steps, so an incomplete one was damaged afterwards (emptied, a file
  removed by hand or by a failing disk); it never counts as committed.
  """
  return (tf.io.gfile.exists(join(step_dir, METADATA_FILENAME)) and
          tf.io.gfile.exists(state_prefix(step_dir) + ".index"))


def set_aside_name(root: str, step: int) -> str:
  """A free name for a damaged step: <step>.damaged, then .damaged-2, ..."""
  base = join(root, f"{step}{DAMAGED_SUFFIX}")
  candidate, n = base, 1
  while tf.io.gfile.exists(candidate):
    n += 1
    candidate = f"{base}-{n}"
  return candidate


def move_tree(source: str, target: str, atomic: bool) -> None:
  """Renames a directory; where renames are not atomic (gs://), copies it and then removes it."""
  if atomic:
    tf.io.gfile.rename(source, target)
    return
  for directory, _, names in tf.io.gfile.walk(source):
    relative = directory[len(source):].strip("/")
    tf.io.gfile.makedirs(join(target, relative) if relative else target)
    for name in names:
      parts = [p for p in (relative, name) if p]
      tf.io.gfile.copy(join(source, *parts), join(target, *parts), overwrite=True)
  tf.io.gfile.rmtree(source)


def check_complete(value: str, step_dir: str) -> None:
  """Refuses a prefix or step directory that belongs to an unfinished save."""
  if any(TMP_RE.match(part) for part in value.split("/")):
    raise ConfigError("restore_from", f"{value} is an unfinished (temporary) checkpoint.")
  name = step_dir.rstrip("/").rsplit("/", 1)[-1]
  if (not is_atomic_rename_filesystem(step_dir) and STEP_RE.match(name)
      and not tf.io.gfile.exists(join(step_dir, COMMIT_MARKER_FILENAME))):
    raise ConfigError("restore_from",
                      f"{value} was never committed (no {COMMIT_MARKER_FILENAME} in {step_dir}).")


def parent(path: str) -> str:
  """The directory above `path` ('' for a bare name); URLs keep their scheme."""
  return path.rstrip("/").rsplit("/", 1)[0] if "/" in path.rstrip("/") else ""


def resolve_restore_from(root: str, restore_from: str, committed: list) -> str:
  """Turns a user's `restore_from` into a state checkpoint prefix.

  Accepted forms, tried in this order:
    * a step number: a committed step in this root;
    * a checkpoint prefix: a path P with a file P.index (`<run>/checkpoints/5/state/ckpt`);
    * a step directory: `<dir>/state/ckpt.index` exists (e.g. `<run>/checkpoints/5`);
    * a checkpoints directory or a workdir holding one: its newest committed step.
  Directories named `<step>.orbax-checkpoint-tmp...` and, on filesystems without atomic
  rename, step directories without `commit_success.txt` are refused as incomplete.

  Args:
    root: the run's checkpoints directory (a step number is one of its steps).
    restore_from: the config value.
    committed: the committed steps of `root`.

  Returns:
    The prefix to pass to `restore_checkpoint` (or `tf.train.Checkpoint.read`).

  Raises:
    ConfigError: (field `restore_from`) nothing restorable is at that place.
  """
  value = restore_from.strip()
  if not value:
    raise ConfigError("restore_from", "is empty.")
  if STEP_RE.match(value):
    step = int(value)
    if step not in committed:
      raise ConfigError(
          "restore_from",
          f"step {step} has no committed checkpoint in {root} (committed: {committed}).")
    return state_prefix(join(root, str(step)))

  path = value.rstrip("/")
  try:
    if tf.io.gfile.exists(path + ".index"):
      check_complete(path, parent(parent(path)))
      return path
    if tf.io.gfile.exists(state_prefix(path) + ".index"):
      check_complete(path, path)
      return state_prefix(path)
    for candidate_root in (path, join(path, "checkpoints")):
      steps = committed_steps(candidate_root)
      if steps:
        logging.info("restore_from %s: using its newest committed step %d.", value, steps[-1])
        return state_prefix(join(candidate_root, str(steps[-1])))
  except tf.errors.OpError as e:
    raise ConfigError("restore_from", f"cannot read {value}: {e}") from e
  raise ConfigError(
      "restore_from",
      f"{value!r} is neither a step number of {root} nor a checkpoint: expected a "
      f"checkpoint prefix P with a file P.index, a step directory containing "
      f"{STATE_SUBDIR}/{STATE_PREFIX_NAME}.index, or a checkpoints directory with committed "
      "steps.")

"""Reading numbered checkpoints: list the committed steps, read their metadata, restore them.

CheckpointReader is all a tool that only loads a trained run needs; manager.CheckpointManager
adds saving, committing, pruning and setting aside on top of it.
"""
import json
import threading
from typing import Optional

from absl import logging
import tensorflow as tf

from vae_dist.checkpointing import layout
from vae_dist.checkpointing import restore_check
from vae_dist.errors import WorkdirError


class CheckpointReader:
  """The committed steps under one root directory (local or a URL such as gs://...).

  Args (keyword-only):
    directory: the root the steps live in (`<workdir>/checkpoints`).
  """

  def __init__(self, *, directory: str):
    self._root = directory.rstrip("/") or directory
    self._atomic = layout.is_atomic_rename_filesystem(self._root)
    self._metadata_cache = {}
    self._metadata_lock = threading.Lock()

  def wait_until_finished(self) -> None:
    """Nothing to wait for: a reader saves nothing (the manager waits for its save in flight)."""

  @property
  def directory(self) -> str:
    return self._root

  def step_dir(self, step: int) -> str:
    """The directory of `step` (whether or not it is committed)."""
    return layout.join(self._root, str(int(step)))

  def state_prefix(self, step: int) -> str:
    """The tf.train.Checkpoint prefix of `step`'s train state."""
    return layout.state_prefix(self.step_dir(step))

  def all_steps(self) -> list:
    """The committed steps, sorted ascending (a save still in flight is not listed)."""
    try:
      return layout.committed_steps(self._root)
    except tf.errors.OpError as e:
      raise WorkdirError(f"Cannot list checkpoints in {self._root}: {e}") from e

  def latest_step(self) -> Optional[int]:
    """The newest committed step, or None when there is none."""
    steps = self.all_steps()
    return steps[-1] if steps else None

  def metadata(self, step: int) -> dict:
    """The `_CHECKPOINT_METADATA` of a committed step.

    Args:
      step: a committed step.

    Returns:
      A dict with step, start_timestamp, commit_timestamp (seconds since the epoch, start <=
      commit) and the keys of the metadata passed to `save`.

    Raises:
      WorkdirError: the step's metadata is missing or unreadable.
    """
    step = int(step)
    with self._metadata_lock:
      cached = self._metadata_cache.get(step)
    if cached is None:
      cached = layout.read_metadata(self.step_dir(step))
      with self._metadata_lock:
        self._metadata_cache[step] = cached
    return json.loads(json.dumps(cached))  # A copy the caller may change.

  def restore(self, step: int, checkpoint: tf.train.Checkpoint, *, expect_partial: bool = False):
    """Restores `checkpoint` from a committed step of this root.

    Waits for a save in flight first, so the step cannot be pruned while it is read.

    Args:
      step: a committed step (see `all_steps`).
      checkpoint: the tf.train.Checkpoint to fill (any strategy).
      expect_partial: for weights-only restores; see `restore_checkpoint`.

    Returns:
      The load status of `Checkpoint.read`.

    Raises:
      CheckpointError: the step holds a model of other shapes than `checkpoint`.
      WorkdirError: the step is not committed here, or cannot be read.
    """
    self.wait_until_finished()
    step = int(step)
    steps = self.all_steps()
    if step not in steps:
      raise WorkdirError(
          f"No committed checkpoint for step {step} in {self._root} (committed: {steps}).")
    logging.info("Restoring checkpoint step %d from %s.", step, self.step_dir(step))
    # Resuming is the only use of a step of this root: the config changed since the run began.
    advice = (f"Checkpoints in {self._root} are unchanged. To resume this run, set the config "
              "back to the values it was started with; to train the changed model, start a new "
              "--workdir.")
    return restore_check.restore_checkpoint(self.state_prefix(step), checkpoint,
                              expect_partial=expect_partial, advice=advice)

  def resolve_restore_from(self, restore_from: str) -> str:
    """A user's `restore_from` as a state checkpoint prefix (see layout.resolve_restore_from)."""
    return layout.resolve_restore_from(self._root, restore_from, self.all_steps())

  def restore_path(self, restore_from: str, checkpoint: tf.train.Checkpoint, *,
                   expect_partial: bool = False) -> str:
    """Resolves a user's `restore_from` (see `resolve_restore_from`) and restores from it.

    Args:
      restore_from: the config value: a step number of this directory or a path.
      checkpoint: the tf.train.Checkpoint to fill; for a weights-only start, one holding only
        the model, with `expect_partial=True`.
      expect_partial: see `restore_checkpoint`.

    Returns:
      The checkpoint prefix restored from.

    Raises:
      ConfigError: nothing restorable at `restore_from`.
      CheckpointError: the checkpoint there holds a model of other shapes than `checkpoint`.
      WorkdirError: the checkpoint there cannot be read.
    """
    self.wait_until_finished()
    prefix = self.resolve_restore_from(restore_from)
    logging.info("Restoring from %s%s.", prefix, " (partial)" if expect_partial else "")
    advice = ("config.restore_from must be a checkpoint of the same model: set the model "
              "fields of the config to those of the run that wrote it, or leave restore_from "
              "empty (config.restore_weights_only does not help when shapes differ: it only "
              "skips the optimizer state and the step).")
    restore_check.restore_checkpoint(prefix, checkpoint, expect_partial=expect_partial, advice=advice)
    return prefix

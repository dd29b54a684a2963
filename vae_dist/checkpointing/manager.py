"""An orbax-style checkpoint manager over tf.train.Checkpoint, for local paths and gs://.

Layout under the manager's directory, `<root>` below (the caller passes `<workdir>/checkpoints`):

  <root>/<step>/state/ckpt.index, ckpt.data-*   the train state, written by Checkpoint.write
  <root>/<step>/_CHECKPOINT_METADATA            JSON: step, start/commit timestamps + caller's dict
  <root>/<step>/commit_success.txt              only on filesystems without atomic rename

How a step becomes committed depends on the filesystem:

* Local disk (no scheme, or file://): the step is written under `<root>/<step>.orbax-checkpoint-tmp`
  and renamed to `<root>/<step>` once complete. rename(2) is atomic, so every `<root>/<step>`
  directory is a whole checkpoint.
* Anything else with a scheme (gs://, s3://, ram://, ...): renaming a directory there copies
  object by object (or, on ram://, does not move the files at all), so the step is written in
  place at `<root>/<step>` and `commit_success.txt` is written last. Only marked steps count.

A process killed mid-write therefore leaves either a temporary directory or an unmarked step;
neither is ever listed as committed, and the chief removes them when its next manager starts. A
write that fails (disk full, file size limit, ...) removes them itself and raises a
CheckpointError naming the OS error and the latest committed step.

A restore that fails because the model's shapes changed raises a CheckpointError listing the
variables that differ (shape in the file vs in the model) and those missing on either side.

A local step directory counts as committed only when it holds `_CHECKPOINT_METADATA` and the
state's index (a rename moves both into place at once, so a step without them was damaged later,
by hand or by a failing disk); the chief renames such a step to `<step>.damaged` at start. A
committed step whose files do not read (truncated, a bad checksum) raises DamagedCheckpointError;
the trainer then sets it aside the same way (`set_aside`) and resumes from the next older step.
Nothing is ever deleted for being damaged.

Saving is asynchronous by default, and `save()` returns once the state is snapshotted
(snapshot.py), so the training loop may change the variables straight away; a background thread
writes the snapshot with the public Checkpoint.write.
"""
import json
import os
import threading
import time
import uuid
from typing import Any, Mapping, Optional

from absl import logging
import tensorflow as tf

from vae_dist.checkpointing import layout
from vae_dist.checkpointing import reader
from vae_dist.checkpointing import retention
from vae_dist.checkpointing import save_errors
from vae_dist.checkpointing import snapshot
from vae_dist.errors import CheckpointError
from vae_dist.errors import first_line
from vae_dist.errors import WorkdirError
from vae_dist import fileio

# Where non-chief workers write their throw-away copy: process memory, never a shared disk.
_SCRATCH_ROOT = "ram://vae_dist_checkpoint_scratch"


def _json_default(value):
  # numpy and TF scalars are what metric dicts usually hold.
  if hasattr(value, "numpy"):
    value = value.numpy()
  if hasattr(value, "tolist"):
    return value.tolist()
  raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _rmtree_quietly(path: str) -> None:
  try:
    if tf.io.gfile.exists(path):
      fileio.rmtree(path)
  except (tf.errors.OpError, OSError) as e:
    logging.warning("Could not remove %s: %s", path, e)


class CheckpointManager(reader.CheckpointReader):
  """Saves, commits, lists, prunes and restores numbered checkpoints under one root directory.

  Typical use in a training loop (every worker runs the same calls):

    manager = CheckpointManager(directory=f"{workdir}/checkpoints", is_chief=is_chief)
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step)
    if (latest := manager.latest_step()) is not None:
      manager.restore(latest, ckpt)
    elif config.restore_from:
      manager.restore_path(config.restore_from, ckpt)
    ...
    manager.save(step, ckpt, {"metrics": {"eval/elbo": elbo}, "num_replicas": 8, ...})
    ...
    manager.close()  # Waits for the last save.

  `save`, `wait_until_finished`, `close` and `restore` must be called from one thread (the
  training loop's), eagerly (not inside a tf.function), outside replica context. Create the
  tf.train.Checkpoint with keyword arguments (model=..., not root=...) so that asynchronous
  saves can snapshot it; other states are saved synchronously, with a warning.

  Args (keyword-only):
    directory: where the steps go, local or a URL (gs://...). Created by the chief if missing.
    is_chief: whether this worker commits checkpoints, prunes old ones and cleans up. Under
      MultiWorkerMirroredStrategy every worker must call `save` (TF may need collectives to read
      the variables), but only the chief writes under `directory`; the others write the same
      checkpoint into an in-memory (ram://) directory of their own and delete it.
    max_to_keep, keep_every_steps, keep_best, best_metric: which steps to keep after each
      commit (retention.Retention); the newest step is always kept.
    async_save: return from `save` once the state is snapshotted and write it in the
      background; False writes and commits before `save` returns.

  Raises:
    ConfigError: a retention setting is out of range (named after the config field).
    WorkdirError: the chief cannot create or clean `directory`.
  """

  def __init__(self, *, directory: str, is_chief: bool = True, max_to_keep: Optional[int] = 3,
               keep_every_steps: int = 0, keep_best: int = 0, best_metric: str = "eval/elbo",
               async_save: bool = True):
    self._retention = retention.Retention(max_to_keep, int(keep_every_steps), int(keep_best),
                                          best_metric)
    super().__init__(directory=directory)
    self._is_chief = bool(is_chief)
    self._async_save = bool(async_save)
    self._scratch_root = layout.join(_SCRATCH_ROOT, f"{os.getpid()}-{uuid.uuid4().hex}")
    self._warned_sync_fallback = False

    self._thread = None  # The background save in flight, if any.
    self._error = None  # An exception from the background save, raised by the next call.
    self._closed = False
    self._saved_steps = set()

    if self._is_chief:
      self._prepare_root()
    # Steps this manager will not save again. It is read once here and then only grows with
    # this manager's own saves, never from a fresh listing: every worker must make the same
    # save-or-skip decision, and a listing would race with the chief's background commit.
    self._saved_steps = set(self.all_steps())

  # ---- properties -------------------------------------------------------------------------------

  @property
  def is_chief(self) -> bool:
    return self._is_chief

  @property
  def async_save(self) -> bool:
    return self._async_save

  # ---- setting aside ------------------------------------------------------------------------------

  def set_aside(self, step: int, reason: str) -> Optional[str]:
    """Renames a step that cannot be used to `<step>.damaged` (chief only; never deletes it).

    Returns:
      The new name, or None on a worker that is not the chief (it leaves the files alone).

    Raises:
      WorkdirError: the step could not be renamed.
    """
    step = int(step)
    self._saved_steps.discard(step)  # The step may be saved again, once the run gets there.
    with self._metadata_lock:
      self._metadata_cache.pop(step, None)
    if not self._is_chief:
      return None
    source = self.step_dir(step)
    target = layout.set_aside_name(self._root, step)
    try:
      layout.move_tree(source, target, self._atomic)
    except (tf.errors.OpError, OSError) as e:
      raise WorkdirError(f"Checkpoint step {step} in {self._root} cannot be used ({reason}) and "
                         f"could not be set aside as {target}: {first_line(e)}. Move it away "
                         "by hand and start again.") from e
    logging.warning("Checkpoint step %d cannot be used (%s); set it aside as %s.", step, reason,
                    target)
    return target

  # ---- saving ------------------------------------------------------------------------------------

  def save(self, step: int, checkpoint: tf.train.Checkpoint,
           metadata: Optional[Mapping[str, Any]] = None) -> bool:
    """Saves `checkpoint` as `step`; with async_save, returns once the state is snapshotted.

    Waits for the previous save first (one save in flight at most) and raises its error if it
    failed. `checkpoint` is only read, and only during this call: the background write works on
    a snapshot, so the training loop may update the variables as soon as this returns.

    Args:
      step: the step number, >= 0.
      checkpoint: the train state.
      metadata: a JSON-serialisable dict stored in `_CHECKPOINT_METADATA` next to step and
        timestamps: eval metrics under "metrics" (where `keep_best` looks for `best_metric`),
        replica count, versions, config hash... numpy scalars and arrays are converted.

    Returns:
      True if a save was started; False if this step was already saved (a committed step is
      never overwritten; the skip is the same on every worker).

    Raises:
      WorkdirError: this save (when synchronous) or the previous background save failed.
      ValueError: a negative step, or metadata that is not JSON-serialisable or uses one of the
        keys step, start_timestamp, commit_timestamp.
      RuntimeError: the manager was closed.
    """
    if self._closed:
      raise RuntimeError("CheckpointManager.save() called after close().")
    step = int(step)
    if step < 0:
      raise ValueError(f"step must be >= 0, got {step}.")
    self.wait_until_finished()
    if step in self._saved_steps:
      logging.info("Checkpoint step %d already exists in %s; not saving it again.", step,
                   self._root)
      return False
    record = self._new_record(step, time.time(), metadata)

    frozen = None
    if self._async_save:
      try:
        frozen = snapshot.take_snapshot(checkpoint)
      except snapshot.NotSnapshottable as e:
        if not self._warned_sync_fallback:
          logging.warning("Saving checkpoints synchronously: the train state cannot be "
                          "snapshotted (%s).", e)
          self._warned_sync_fallback = True
    self._saved_steps.add(step)
    if frozen is None:
      try:
        self._write_step(step, record, checkpoint)
      except BaseException:
        self._saved_steps.discard(step)  # A failed step may be saved again.
        raise
      return True
    # Not a daemon thread: an interpreter that exits while a save is in flight waits for its
    # commit instead of leaving a half-written step.
    self._thread = threading.Thread(
        target=self._background_write, args=(step, record, frozen),
        name=f"vae_dist-checkpoint-{step}")
    self._thread.start()
    return True

  def wait_until_finished(self) -> None:
    """Blocks until the save in flight (if any) is committed.

    Raises:
      WorkdirError (or the original exception for unexpected errors): the background save
        failed; the error is raised once.
    """
    thread, self._thread = self._thread, None
    if thread is not None:
      thread.join()
    error, self._error = self._error, None
    if error is not None:
      raise error

  def close(self) -> None:
    """Waits for the save in flight and refuses further saves."""
    if self._closed:
      return
    self._closed = True
    self.wait_until_finished()

  def __enter__(self):
    return self

  def __exit__(self, exc_type, exc, tb):
    if exc_type is None:
      self.close()
    else:
      # Keep the original exception; still let the last save finish.
      self._closed = True
      try:
        self.wait_until_finished()
      except Exception as e:  # pylint: disable=broad-except
        logging.error("The last checkpoint save failed too: %s", e)
    return False

  # ---- internals ---------------------------------------------------------------------------------

  def _new_record(self, step, start, metadata) -> dict:
    """The JSON record of a step: step and timestamps, then the caller's metadata."""
    metadata = dict(metadata or {})
    reserved = sorted({"step", "start_timestamp", "commit_timestamp"} & set(metadata))
    if reserved:
      raise ValueError(f"Checkpoint metadata may not set {reserved}: the manager writes them.")
    record = {"step": step, "start_timestamp": start, "commit_timestamp": None, **metadata}
    try:
      # Round-trip now so that a bad value fails in the caller's frame, not in the background.
      return json.loads(json.dumps(record, default=_json_default))
    except (TypeError, ValueError) as e:
      raise ValueError(f"Checkpoint metadata for step {step} is not JSON-serialisable: {e}") from e

  def _background_write(self, step: int, record: dict, frozen: snapshot.Snapshot) -> None:
    try:
      self._write_step(step, record, frozen)
    except BaseException as e:  # pylint: disable=broad-except
      # Kept for the training loop's next call, whose message is the one the user reads;
      # logged briefly now in case that call never comes.
      logging.error("Background save of checkpoint step %d failed: %s", step,
                    save_errors.reason(e)[0] if isinstance(e, CheckpointError) else e)
      self._saved_steps.discard(step)  # A failed step may be saved again.
      self._error = e

  def _write_step(self, step: int, record: dict, writer) -> None:
    """Writes `writer` (a Checkpoint or a snapshot.Snapshot) as `step`: committed, or scratch."""
    if self._is_chief:
      self._commit(step, record, writer)
      return
    # Non-chief workers write the same checkpoint (it is the same program) to a directory of
    # their own and drop it: only the chief's copy is kept.
    scratch = layout.join(self._scratch_root, str(step))
    try:
      writer.write(layout.state_prefix(scratch))
    except (tf.errors.OpError, OSError) as e:
      raise WorkdirError(f"Could not write checkpoint step {step} to {scratch}: {e}") from e
    finally:
      _rmtree_quietly(scratch)

  def _commit(self, step: int, record: dict, writer) -> None:
    """Writes the state and metadata of `step` and commits the step (chief only)."""
    final_dir = self.step_dir(step)
    work_dir = final_dir + layout.TMP_SUFFIX if self._atomic else final_dir
    try:
      if tf.io.gfile.exists(work_dir):
        # An earlier attempt at this step in this process failed half-way.
        fileio.rmtree(work_dir)
      tf.io.gfile.makedirs(layout.join(work_dir, layout.STATE_SUBDIR))
      writer.write(layout.state_prefix(work_dir))
      record["commit_timestamp"] = max(time.time(), record["start_timestamp"])
      with tf.io.gfile.GFile(layout.join(work_dir, layout.METADATA_FILENAME), "w") as f:
        f.write(json.dumps(record, indent=2, sort_keys=True))
      if self._atomic:
        tf.io.gfile.rename(work_dir, final_dir)
      else:
        # Written last: its presence is what makes the step committed.
        with tf.io.gfile.GFile(layout.join(work_dir, layout.COMMIT_MARKER_FILENAME), "w") as f:
          f.write(f"Checkpoint commit was successful to {final_dir}\n")
    except (tf.errors.OpError, OSError) as e:
      # Nothing half-written may stay behind looking like a save under way (or, without atomic
      # rename, like a step that a marker could still commit).
      _rmtree_quietly(work_dir)
      try:
        committed = self.all_steps()
      except WorkdirError:
        committed = None
      raise CheckpointError(save_errors.write_failure(self._root, step, e, committed)) from e
    with self._metadata_lock:
      self._metadata_cache[step] = record
    logging.info("Committed checkpoint step %d to %s (%.2f s after save() was called).", step,
                 final_dir, record["commit_timestamp"] - record["start_timestamp"])
    self._apply_retention()

  def _prepare_root(self) -> None:
    """Creates the root and removes what interrupted saves left behind (chief only)."""
    try:
      tf.io.gfile.makedirs(self._root)
      names = tf.io.gfile.listdir(self._root)
    except tf.errors.OpError as e:
      raise WorkdirError(f"Cannot create or list the checkpoint directory {self._root}: {e}") from e
    for name in sorted(n.rstrip("/") for n in names):
      path = layout.join(self._root, name)
      if layout.TMP_RE.match(name):
        reason = "temporary directory of an unfinished save"
      elif (not self._atomic and layout.STEP_RE.match(name)
            and not tf.io.gfile.exists(layout.join(path, layout.COMMIT_MARKER_FILENAME))):
        reason = f"step directory without {layout.COMMIT_MARKER_FILENAME} (unfinished save)"
      elif self._atomic and layout.STEP_RE.match(name) and not layout.is_complete(path):
        if not tf.io.gfile.isdir(path):
          raise WorkdirError(f"{path} is not a directory, where checkpoint step {name} should "
                             "be one; move it out of the checkpoints directory and start again.")
        # Renamed into place whole, so it was damaged since: keep it for a look.
        self.set_aside(int(name), f"it lacks {layout.METADATA_FILENAME} or "
                       f"{layout.STATE_SUBDIR}/{layout.STATE_PREFIX_NAME}.index")
        continue
      else:
        continue
      logging.warning("Removing %s: %s.", path, reason)
      try:
        fileio.rmtree(path)
      except tf.errors.OpError as e:
        raise WorkdirError(f"Cannot remove the incomplete checkpoint {path}: {e}") from e

  def _metric(self, step: int) -> Optional[float]:
    try:
      return self._retention.metric(self.metadata(step))
    except WorkdirError as e:
      logging.warning("Step %d is not ranked for keep_best: %s", step, e)
      return None

  def _apply_retention(self) -> None:
    steps = self.all_steps()
    keep = self._retention.steps_to_keep(steps, self._metric)
    for step in steps:
      if step not in keep:
        self._delete_step(step)

  def _delete_step(self, step: int) -> None:
    """Uncommits a step first, then deletes its files, so a crash never leaves half a step."""
    step_dir = self.step_dir(step)
    try:
      if self._atomic:
        trash = step_dir + layout.TMP_SUFFIX + ".deleting"
        _rmtree_quietly(trash)
        tf.io.gfile.rename(step_dir, trash)
        fileio.rmtree(trash)
      else:
        tf.io.gfile.remove(layout.join(step_dir, layout.COMMIT_MARKER_FILENAME))
        fileio.rmtree(step_dir)
    except (tf.errors.OpError, OSError) as e:
      # Not fatal: the newer checkpoints are safe; a leftover is retried at the next commit or
      # removed at the next start.
      logging.warning("Could not delete old checkpoint %s: %s", step_dir, e)
      return
    with self._metadata_lock:
      self._metadata_cache.pop(step, None)
    logging.info("Deleted old checkpoint %s.", step_dir)


"""The map of a training run's workdir (RunDir), and the places no tool may write to.

A workdir is owned by its training run: checkpoints, TensorBoard events, config, metrics and lock
are written by the run alone. The tools (generate, evaluate, export) write their own outputs next
to them (generated/, evaluations/, concept_vectors/, or anywhere else the user says), but never
over or into a run: an output path that is a workdir or lies inside a run's managed files is
refused before anything is written. Replacing a directory (export --overwrite) is allowed only
for the tool's own earlier output, so no `--out` can delete or damage a run.
"""
import dataclasses
import os
from typing import Optional

import tensorflow as tf

from vae_dist.errors import WorkdirError
from vae_dist import fileio

CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
CONFIG = "config.json"
CONFIG_HISTORY = "config_history.jsonl"
METRICS = "metrics.jsonl"
FINAL_METRICS = "final_metrics.json"
RUN_INFO = "run_info.json"
MODEL_SUMMARY = "model_summary.txt"
LOCK = "lock"
GENERATED = "generated"

# The names training writes and owns: name -> (kind, what it is), for the messages.
MANAGED = {
    CHECKPOINTS: ("dir", "the run's checkpoints"),
    TENSORBOARD: ("dir", "the run's TensorBoard events"),
    CONFIG: ("file", "the run's config"),
    CONFIG_HISTORY: ("file", "the history of the run's config"),
    METRICS: ("file", "the run's metrics"),
    FINAL_METRICS: ("file", "the run's final evaluation"),
    RUN_INFO: ("file", "the versions, git commit and host of each start of the run"),
    MODEL_SUMMARY: ("file", "the model's summary and parameter count"),
    LOCK: ("file", "the run's lock"),
}


@dataclasses.dataclass(frozen=True)
class RunDir:
  """Every path of one run's workdir (local or gs://); the one place that spells them.

  Attributes:
    root: the workdir, as the user gave it.
  """
  root: str

  def _path(self, *names: str) -> str:
    return os.path.join(self.root, *names)

  @property
  def checkpoints(self) -> str:
    return self._path(CHECKPOINTS)

  @property
  def tensorboard(self) -> str:
    return self._path(TENSORBOARD)

  def tensorboard_run(self, name: str) -> str:
    """The event directory of one TensorBoard run ('train', 'eval', ...)."""
    return self._path(TENSORBOARD, name)

  @property
  def config(self) -> str:
    return self._path(CONFIG)

  @property
  def config_history(self) -> str:
    return self._path(CONFIG_HISTORY)

  @property
  def metrics(self) -> str:
    return self._path(METRICS)

  @property
  def final_metrics(self) -> str:
    return self._path(FINAL_METRICS)

  @property
  def run_info(self) -> str:
    return self._path(RUN_INFO)

  @property
  def model_summary(self) -> str:
    return self._path(MODEL_SUMMARY)

  @property
  def lock(self) -> str:
    return self._path(LOCK)

  def generated(self, name: str) -> str:
    """Where `generate` writes its picture `name` by default (not a managed file)."""
    return self._path(GENERATED, name)
# Enough to call a directory a training run's workdir (an export holds a config.json too, so
# config.json alone counts only without an export's vae_export.json).
_RUN_MARKERS = (CHECKPOINTS, METRICS, LOCK, TENSORBOARD)
_EXPORT_MARKER = "vae_export.json"


def _normal(path: str) -> str:
  """An absolute, symlink-free path for local paths; URLs with '.' and '..' resolved."""
  if fileio.is_local(path):
    return os.path.realpath(path[len("file://"):] if path.startswith("file://") else path)
  scheme, rest = path.split("://", 1)
  return f"{scheme}://{os.path.normpath('/' + rest).lstrip('/')}"


def is_workdir(path: str) -> bool:
  """Whether `path` is a directory holding a training run."""
  try:
    if not tf.io.gfile.isdir(path):
      return False
    if any(tf.io.gfile.exists(os.path.join(path, name)) for name in _RUN_MARKERS):
      return True
    return (tf.io.gfile.exists(os.path.join(path, CONFIG)) and
            not tf.io.gfile.exists(os.path.join(path, _EXPORT_MARKER)))
  except tf.errors.OpError:
    return False


def check_kinds(workdir: str) -> None:
  """Refuses a workdir where a managed name is of the wrong kind (config.json a directory, ...).

  Raises:
    WorkdirError: naming the first such path.
  """
  for name, (kind, what) in MANAGED.items():
    path = os.path.join(workdir, name)
    try:
      if not tf.io.gfile.exists(path):
        continue
      is_dir = tf.io.gfile.isdir(path)
    except tf.errors.OpError:
      continue
    if is_dir != (kind == "dir"):
      found, want = ("a directory", "a file") if is_dir else ("a file", "a directory")
      raise WorkdirError(f"{path} is {found}, where vae_dist keeps {what} ({want}); move it "
                         "out of the workdir (or choose another --workdir) and start again.")


def _managed_owner(path: str) -> Optional[tuple]:
  """(workdir, managed name) when `path` is, or lies inside, a managed file of a workdir."""
  current = path
  while True:
    parent = os.path.dirname(current.rstrip("/"))
    if not parent or parent == current or parent.endswith("://"):
      return None
    name = os.path.basename(current.rstrip("/"))
    if name in MANAGED and is_workdir(parent):
      return parent, name
    current = parent


def check_output(path: str, *, flag: str = "--out") -> str:
  """Refuses an output path that would write over, into or around a training run.

  Args:
    path: what the user gave (a file or a directory to create).
    flag: the flag that gave it, for the message.

  Returns:
    The path, normalised (absolute, symlinks resolved for local paths).

  Raises:
    WorkdirError: `path` is a workdir, or is or lies in a workdir's managed files
      (checkpoints/, tensorboard/, config.json, metrics.jsonl, lock, ...).
  """
  normal = _normal(path)
  if is_workdir(normal):
    raise WorkdirError(f"{flag}={path} is a training run's workdir; a tool never writes over a "
                       f"run. Choose a path outside it, e.g. {os.path.join(path, 'exported')}.")
  owner = _managed_owner(normal)
  if owner is not None:
    workdir, name = owner
    where = "is" if normal.rstrip("/") == os.path.join(workdir, name) else "is inside"
    raise WorkdirError(f"{flag}={path} {where} {os.path.join(workdir, name)}, "
                       f"{MANAGED[name][1]}, which only training writes. Choose a path outside "
                       "the run's checkpoints, tensorboard, config and metrics.")
  # A directory that holds a run further down is never replaced either: the only tool that
  # replaces directories (export --overwrite) replaces nothing but its own exports.
  return normal


def check_training_workdir(workdir: str) -> None:
  """Refuses a training workdir inside another run's managed files, or an export.

  Raises:
    WorkdirError: naming the run (or export) it would write into.
  """
  normal = _normal(workdir)
  owner = _managed_owner(normal)
  if owner is not None:
    other, name = owner
    raise WorkdirError(f"--workdir={workdir} is inside {os.path.join(other, name)}, "
                       f"{MANAGED[name][1]} of the run in {other}; a run never writes into "
                       "another run's files. Choose another --workdir.")
  try:
    exported = tf.io.gfile.exists(os.path.join(normal, _EXPORT_MARKER))
  except tf.errors.OpError:
    exported = False
  if exported:
    raise WorkdirError(f"--workdir={workdir} holds a SavedModel export (it has "
                       f"{_EXPORT_MARKER}), not a training run. Choose another --workdir.")

"""Where a run's numbers and pictures go: metrics.jsonl and TensorBoard runs `train` and `eval`.

Keys are written to metrics.jsonl as given ("train/elbo", "eval/elbo"); in TensorBoard the prefix
names the run and the rest is the tag ("elbo" in run `train` and in run `eval`), so the train and
eval curves of one quantity share a chart, as Keras' train and validation runs do.

Only the chief writes; other workers get a writer that does nothing, so callers need no checks.
Everything is written from the host between host loops, never from inside a step.

Object stores (gs://) cannot append: TensorFlow's GCS writer uploads the whole file again at
every flush, and a rename is a copy plus a delete. Written the local way (a metrics.jsonl
rewritten per log line, event files flushed per host loop), the bytes uploaded grow with the
square of the run's length and every host loop waits on the network. So on object stores:

- metrics lines are buffered and written as numbered part files holding only the new lines,
  `metrics.jsonl.parts/<n>.jsonl`, when FLUSH_SECONDS have passed or a checkpoint is saved
  (so a resumed run finds every line up to its checkpoint); at the end of the run (and when a
  run resumes) the parts are merged into `metrics.jsonl` and removed. read_metrics() reads both.
- TensorBoard writers are flushed at most every FLUSH_SECONDS, and after ROTATE_AFTER_FLUSHES
  flushes a run's event file is closed and a new one started, so each event byte is uploaded
  at most that many times (TensorBoard reads every event file of a run directory).
Local disks keep the cheap way: a line appended per log point, writers flushed per host loop.
"""
import contextlib
import json
import os
import time

import numpy as np
import tensorflow as tf

from vae_dist import fileio
from vae_dist import run_files

# On object stores: the longest time metrics lines and events wait in memory before an upload.
FLUSH_SECONDS = 60.0
# On object stores: flushes of one event file before it is closed and a new one is started.
ROTATE_AFTER_FLUSHES = 3
PARTS_DIR = "metrics.jsonl.parts"


def _read_lines(path: str) -> list:
  """The file's lines; bytes that are not UTF-8 (a damaged line) become U+FFFD, not an error."""
  with tf.io.gfile.GFile(path, "rb") as f:
    return f.read().decode("utf-8", "replace").splitlines()


def _parse(lines):
  out = []
  for line in lines:
    try:
      record = json.loads(line)
      if isinstance(record, dict) and isinstance(record.get("step"), int):
        out.append(line)
    except ValueError:
      pass  # A line cut short by a kill.
  return out


def _stored_lines(workdir: str):
  """(lines of metrics.jsonl then of its parts in order, the part files), duplicates dropped.

  A run killed after merging the parts but before removing them leaves lines in both places;
  they are identical, and kept once.
  """
  jsonl = run_files.RunDir(workdir).metrics
  try:
    lines = _read_lines(jsonl)
  except tf.errors.NotFoundError:  # (ram:// says a name exists when it is a prefix of one.)
    lines = []
  parts_dir = os.path.join(workdir, PARTS_DIR)
  parts = []
  if tf.io.gfile.isdir(parts_dir):
    parts = sorted(os.path.join(parts_dir, n) for n in tf.io.gfile.listdir(parts_dir)
                   if n.endswith(".jsonl"))
  seen = set(lines)
  for part in parts:
    for line in _read_lines(part):
      if line not in seen:
        seen.add(line)
        lines.append(line)
  return _parse(lines), parts


def read_metrics(workdir: str) -> list:
  """Every metrics record of a run, in order: metrics.jsonl and, on gs://, its part files."""
  return [json.loads(line) for line in _stored_lines(workdir)[0]]


class MetricWriter:
  """Writes scalars to metrics.jsonl and TensorBoard, and images/histograms/text to TensorBoard.

  Args (keyword-only):
    workdir: the run's directory (local or gs://).
    enabled: False on non-chief workers: every method is then a no-op.
  """

  def __init__(self, *, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self.jsonl_path = run_files.RunDir(workdir).metrics
    self.logdir = run_files.RunDir(workdir).tensorboard
    self.workdir = workdir
    self.object_store = not fileio.is_local(workdir)
    self._writers = {}
    self._flushes = {}  # Flushes of each run's current event file (object stores).
    self._opened = {}  # When each run's current event file was opened (wall clock).
    self._pending = []  # Metrics lines not yet uploaded (object stores).
    self._next_part = 0
    self._last_flush = time.monotonic()
    if not enabled:
      return
    for run in ("train", "eval"):
      self._open(run)

  def _open(self, run: str) -> None:
    if self.object_store:
      # Only our own flushes upload: no flush every 10 events or every 2 minutes.
      # (flush_millis is multiplied by 1000 in an int32: 30 minutes is near its limit.)
      writer = tf.summary.create_file_writer(os.path.join(self.logdir, run), max_queue=10**6,
                                             flush_millis=30 * 60 * 1000)
    else:
      writer = tf.summary.create_file_writer(os.path.join(self.logdir, run))
    self._writers[run] = writer
    self._flushes[run] = 0
    self._opened[run] = time.time()

  def forget_after(self, step: int) -> None:
    """Drops metrics.jsonl lines after `step`, where a resumed run starts again.

    A run killed after its last checkpoint logged steps that the resumed run logs once more; a
    line cut short by the kill is dropped too. The file is replaced whole, atomically; on object
    stores the part files of the killed run are merged into it first, then removed.
    """
    if not self.enabled:
      return
    self._merge(last_step=step)

  def _merge(self, last_step=None) -> None:
    """Rewrites metrics.jsonl as its lines and its parts' (up to last_step), removes the parts."""
    if not tf.io.gfile.exists(self.jsonl_path) and not tf.io.gfile.isdir(
        os.path.join(self.workdir, PARTS_DIR)):
      return
    if self.object_store:
      lines, parts = _stored_lines(self.workdir)
      changed = bool(parts)
    else:
      raw = _read_lines(self.jsonl_path)
      lines, parts = _parse(raw), []
      changed = len(lines) != len(raw)  # A line cut short by a kill.
    kept = [l for l in lines if last_step is None or json.loads(l)["step"] <= last_step]
    if changed or len(kept) != len(lines):
      fileio.write_text_atomic(self.jsonl_path, "".join(k + "\n" for k in kept))
    for part in parts:  # Only once their lines are in metrics.jsonl.
      try:
        tf.io.gfile.remove(part)
      except tf.errors.NotFoundError:
        pass  # A retried delete whose first attempt went through.

  @contextlib.contextmanager
  def _target(self, run: str, step: int):
    """Makes `run`'s writer the default at `step`, without flushing it afterwards.

    `writer.as_default()` flushes the writer when its block ends (in eager mode): one flush per
    tag written, and on gs:// each flush uploads the whole event file again. Our flushes come
    from flush() instead. The writer stays the thread's default afterwards; every summary of a
    run is written through this class, which sets the one it means each time.
    """
    self._writers[run].set_as_default(step=int(step))
    yield

  @staticmethod
  def _run_and_tag(key: str) -> tuple:
    """'eval/elbo' -> ('eval', 'elbo'); 'train/elbo' -> ('train', 'elbo'); other keys go to the
    train run unchanged."""
    run, _, rest = key.partition("/")
    if run in ("train", "eval") and rest:
      return run, rest
    return "train", key

  def write_scalars(self, step: int, scalars: dict) -> None:
    if not self.enabled:
      return
    record = {"step": int(step)}
    record.update({k: float(v) for k, v in scalars.items()})
    line = json.dumps(record, sort_keys=True)
    if self.object_store:
      self._pending.append(line)
    else:
      with open(self.jsonl_path, "a") as f:
        f.write(line + "\n")
    for key, value in scalars.items():
      run, tag = self._run_and_tag(key)
      with self._target(run, step):
        tf.summary.scalar(tag, float(value))

  def write_images(self, step: int, images: dict) -> None:
    """images: tag -> float [N, H, W, C] in [0, 1] or uint8."""
    if not self.enabled:
      return
    for key, value in images.items():
      value = np.asarray(value)
      if value.dtype != np.uint8:
        value = np.clip(value, 0.0, 1.0)
      run, tag = self._run_and_tag(key)
      with self._target(run, step):
        tf.summary.image(tag, value, max_outputs=value.shape[0])

  def write_histograms(self, step: int, histograms: dict) -> None:
    if not self.enabled:
      return
    for key, value in histograms.items():
      run, tag = self._run_and_tag(key)
      with self._target(run, step):
        tf.summary.histogram(tag, np.asarray(value))

  def write_text(self, step: int, texts: dict) -> None:
    if not self.enabled:
      return
    for key, value in texts.items():
      run, tag = self._run_and_tag(key)
      with self._target(run, step):
        tf.summary.text(tag, value)

  def write_graph(self, graph, run: str = "train") -> None:
    """A graph (a tf.Graph or a concrete function's graph) as `run`'s graph in the Graphs tab."""
    if not self.enabled:
      return
    with self._target(run, 0):
      tf.summary.graph(graph)

  def write_hparams(self, hparams: dict, trial_id: str) -> None:
    """The HParams tab's session for this run: its hyperparameters, under a unique trial id.

    Written into the `eval` run, where the metrics are: the plugin looks for a session's metrics
    under <session>/<group>, which a session in the logdir's root ('.') never matches. So the
    tab works both on this run's logdir and on a parent folder holding many runs.

    No experiment summary (hp.hparams_config) is written: with one, TensorBoard 2.21 takes the
    first it finds as the whole experiment (one run's domains, and `differs` never set, so the
    columns that differ between runs are not the ones shown). Without it, the plugin builds the
    experiment from every run's session: each hparam's type from its values (bool, number,
    string), its domain (the strings and bools seen, the numbers' interval), `differs` when
    runs disagree, and the metrics from the eval run's scalars.

    Args:
      hparams: name -> bool, int, float or str.
      trial_id: the session group's name; sessions with the same one collapse into one row.
    """
    if not self.enabled:
      return
    from tensorboard.plugins.hparams import api as hp  # pylint: disable=g-import-not-at-top
    with self._target("eval", 0):
      hp.hparams(hparams, trial_id=trial_id)

  def flush(self, *, metrics_now: bool = False, force: bool = False) -> None:
    """Flushes what was written; on object stores at most every FLUSH_SECONDS unless `force`.

    Args:
      metrics_now: on object stores, upload the pending metrics lines now (a checkpoint was
        saved: a run resumed from it must find every line up to it).
      force: flush everything now.
    """
    if not self.enabled:
      return
    if not self.object_store:
      for w in self._writers.values():
        w.flush()
      return
    due = force or time.monotonic() - self._last_flush >= FLUSH_SECONDS
    if due or metrics_now:
      self._write_part()
    if not due:
      return
    self._last_flush = time.monotonic()
    for run, w in list(self._writers.items()):
      w.flush()
      self._flushes[run] += 1
      # Event file names start with their creation second, and TensorBoard reads a run's files
      # in name order: a new file must not start in the same second as the one it follows.
      if (self._flushes[run] >= ROTATE_AFTER_FLUSHES and
          time.time() - self._opened[run] >= 1.0):
        w.close()
        self._open(run)

  def _write_part(self) -> None:
    if not self._pending:
      return
    parts_dir = os.path.join(self.workdir, PARTS_DIR)
    if self._next_part == 0 and tf.io.gfile.isdir(parts_dir):
      names = [n for n in tf.io.gfile.listdir(parts_dir) if n.endswith(".jsonl")]
      self._next_part = 1 + max([int(n.split(".")[0]) for n in names if n[:1].isdigit()] or [-1])
    path = os.path.join(parts_dir, f"{self._next_part:06d}.jsonl")
    # A new object, written once: no rename needed, and a kill leaves no half line behind
    # (GCS makes an upload visible only when it is complete).
    with tf.io.gfile.GFile(path, "w") as f:
      f.write("".join(line + "\n" for line in self._pending))
    self._pending = []
    self._next_part += 1

  def close(self) -> None:
    if self.enabled and self.object_store:
      self._write_part()
      self._merge()
    for w in self._writers.values():
      w.close()
    if self._writers:  # No closed writer left as this thread's default (see _target).
      tf.summary.create_noop_writer().set_as_default()

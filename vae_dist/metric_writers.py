"""Where a run's numbers and pictures go: metrics.jsonl and TensorBoard runs `train` and `eval`.

Only the chief writes; other workers get a writer that does nothing, so callers need no checks.
Everything is written from the host between host loops, never from inside a step.
"""
import json
import os

import numpy as np
import tensorflow as tf

from vae_dist import fileio


class MetricWriter:
  """Writes scalars to metrics.jsonl and TensorBoard, and images/histograms/text to TensorBoard.

  Args (keyword-only):
    workdir: the run's directory (local or gs://).
    enabled: False on non-chief workers: every method is then a no-op.
  """

  def __init__(self, *, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
    self.logdir = os.path.join(workdir, "tensorboard")
    self._writers = {}
    self._lines = None
    if not enabled:
      return
    for run in ("train", "eval"):
      self._writers[run] = tf.summary.create_file_writer(os.path.join(self.logdir, run))
    if not fileio.is_local(self.jsonl_path):
      # Object stores cannot append: keep the lines and rewrite the (small) file each time.
      self._lines = []
      if tf.io.gfile.exists(self.jsonl_path):
        with tf.io.gfile.GFile(self.jsonl_path) as f:
          self._lines = f.read().splitlines()

  def forget_after(self, step: int) -> None:
    """Drops metrics.jsonl lines after `step`, where a resumed run starts again.

    A run killed after its last checkpoint logged steps that the resumed run logs once more; a
    line cut short by the kill is dropped too. The file is replaced whole, atomically.
    """
    if not self.enabled or not tf.io.gfile.exists(self.jsonl_path):
      return
    with tf.io.gfile.GFile(self.jsonl_path, "rb") as f:
      # Bytes that are not UTF-8 (a damaged line) become U+FFFD and the line is dropped below.
      lines = f.read().decode("utf-8", "replace").splitlines()
    kept = []
    for line in lines:
      try:
        if json.loads(line)["step"] <= step:
          kept.append(line)
      except (ValueError, KeyError, TypeError):
        pass
    if len(kept) != len(lines):
      fileio.write_text_atomic(self.jsonl_path, "".join(k + "\n" for k in kept))
    if self._lines is not None:
      self._lines = kept

  @staticmethod
  def _run_of(tag: str) -> str:
    return "eval" if tag.startswith("eval/") else "train"

  def write_scalars(self, step: int, scalars: dict) -> None:
    if not self.enabled:
      return
    record = {"step": int(step)}
    record.update({k: float(v) for k, v in scalars.items()})
    line = json.dumps(record, sort_keys=True)
    if self._lines is None:
      with open(self.jsonl_path, "a") as f:
        f.write(line + "\n")
    else:
      self._lines.append(line)
      tmp = self.jsonl_path + ".tmp"
      with tf.io.gfile.GFile(tmp, "w") as f:
        f.write("\n".join(self._lines) + "\n")
      tf.io.gfile.rename(tmp, self.jsonl_path, overwrite=True)
    for tag, value in scalars.items():
      with self._writers[self._run_of(tag)].as_default(step=int(step)):
        tf.summary.scalar(tag, float(value))

  def write_images(self, step: int, images: dict) -> None:
    """images: tag -> float [N, H, W, C] in [0, 1] or uint8."""
    if not self.enabled:
      return
    for tag, value in images.items():
      value = np.asarray(value)
      if value.dtype != np.uint8:
        value = np.clip(value, 0.0, 1.0)
      with self._writers[self._run_of(tag)].as_default(step=int(step)):
        tf.summary.image(tag, value, max_outputs=value.shape[0])

  def write_histograms(self, step: int, histograms: dict) -> None:
    if not self.enabled:
      return
    for tag, value in histograms.items():
      with self._writers[self._run_of(tag)].as_default(step=int(step)):
        tf.summary.histogram(tag, np.asarray(value))

  def write_text(self, step: int, texts: dict) -> None:
    if not self.enabled:
      return
    for tag, value in texts.items():
      with self._writers[self._run_of(tag)].as_default(step=int(step)):
        tf.summary.text(tag, value)

  def write_graph(self, graph) -> None:
    """The train step's graph (a tf.Graph or concrete function's graph) for the Graphs tab."""
    if not self.enabled:
      return
    with self._writers["train"].as_default(step=0):
      tf.summary.graph(graph)

  def write_hparams(self, hparams: dict, metric_tags) -> None:
    """The HParams tab's session for this run: config values, and which eval scalars compare.

    Written into the `eval` run, where the metrics are: the plugin looks for a session's metrics
    under <session>/<group>, which a session in the logdir's root ('.') never matches. So the
    tab works both on this run's logdir and on a parent folder holding many runs.
    """
    if not self.enabled:
      return
    from tensorboard.plugins.hparams import api as hp  # pylint: disable=g-import-not-at-top
    with self._writers["eval"].as_default(step=0):
      hp.hparams_config(
          hparams=[hp.HParam(name) for name in hparams],
          metrics=[hp.Metric(tag, display_name=tag) for tag in metric_tags])
      hp.hparams(hparams, trial_id=os.path.basename(os.path.dirname(self.logdir.rstrip("/"))))

  def flush(self) -> None:
    for w in self._writers.values():
      w.flush()

  def close(self) -> None:
    for w in self._writers.values():
      w.close()

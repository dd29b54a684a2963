"""MetricWriter on an object store: buffered metrics part files, timed flushes, rotated event files.

ram:// stands in for the scheme here (it has no GCS semantics, which test_gcs_train covers through
the real client): what is checked is when the writer writes what, and what a reader then sees.
"""
import json
import os
import time
import uuid

import pytest
import tensorflow as tf

from vae_dist.report import metric_writers


@pytest.fixture
def workdir():
  path = f"ram://mw_{uuid.uuid4().hex}"
  tf.io.gfile.makedirs(path)
  return path


def _parts(workdir):
  d = os.path.join(workdir, metric_writers.PARTS_DIR)
  return sorted(tf.io.gfile.listdir(d)) if tf.io.gfile.isdir(d) else []


def _event_files(workdir, run):
  return [n for n in tf.io.gfile.listdir(os.path.join(workdir, "tensorboard", run))
          if n.startswith("events.")]


def test_lines_wait_for_a_checkpoint_or_the_timer_then_merge_at_close(workdir, monkeypatch):
  clock = [1000.0]
  monkeypatch.setattr(metric_writers.time, "monotonic", lambda: clock[0])
  w = metric_writers.MetricWriter(workdir=workdir)
  w.write_scalars(2, {"train/loss": 1.0})
  w.flush()
  assert _parts(workdir) == []  # Nothing uploaded within the minute.
  w.write_scalars(4, {"train/loss": 0.5})
  w.flush(metrics_now=True)  # A checkpoint was saved at step 4.
  assert _parts(workdir) == ["000000.jsonl"]
  assert [m["step"] for m in metric_writers.read_metrics(workdir)] == [2, 4]
  w.write_scalars(6, {"train/loss": 0.25})
  clock[0] += metric_writers.FLUSH_SECONDS
  w.flush()
  assert _parts(workdir) == ["000000.jsonl", "000001.jsonl"]
  w.write_scalars(8, {"train/loss": 0.125})
  w.close()
  assert _parts(workdir) == []
  with tf.io.gfile.GFile(os.path.join(workdir, "metrics.jsonl")) as f:
    assert [json.loads(l)["step"] for l in f.read().splitlines()] == [2, 4, 6, 8]


def test_a_resume_keeps_lines_up_to_its_step_from_the_file_and_the_parts(workdir):
  w = metric_writers.MetricWriter(workdir=workdir)
  for step in (2, 4):
    w.write_scalars(step, {"train/loss": float(step)})
  w.close()  # metrics.jsonl holds 2, 4.
  w = metric_writers.MetricWriter(workdir=workdir)
  for step in (6, 8, 10):
    w.write_scalars(step, {"train/loss": float(step)})
    w.flush(metrics_now=True)
  del w  # Killed: three parts, never merged; one more line cut short by the kill.
  with tf.io.gfile.GFile(os.path.join(workdir, metric_writers.PARTS_DIR, "000003.jsonl"),
                         "w") as f:
    f.write('{"step": 12, "train/lo')
  w = metric_writers.MetricWriter(workdir=workdir)
  w.forget_after(8)  # Resumed from the checkpoint of step 8.
  assert _parts(workdir) == []
  assert [m["step"] for m in metric_writers.read_metrics(workdir)] == [2, 4, 6, 8]
  w.write_scalars(10, {"train/loss": 10.0})
  w.close()
  assert [m["step"] for m in metric_writers.read_metrics(workdir)] == [2, 4, 6, 8, 10]


def test_event_files_are_flushed_on_the_timer_and_rotated(workdir, monkeypatch):
  clock = [1000.0]
  monkeypatch.setattr(metric_writers.time, "monotonic", lambda: clock[0])
  w = metric_writers.MetricWriter(workdir=workdir)
  for i in range(metric_writers.ROTATE_AFTER_FLUSHES + 1):
    w.write_scalars(i, {"train/loss": float(i), "eval/elbo": -float(i)})
    clock[0] += metric_writers.FLUSH_SECONDS
    if i == metric_writers.ROTATE_AFTER_FLUSHES - 1:
      time.sleep(1.0)  # Files are named by their creation second: no rotation within one.
    w.flush()
  w.close()
  # One file per ROTATE_AFTER_FLUSHES flushes; TensorBoard reads them all, in order.
  assert len(_event_files(workdir, "train")) == 2
  steps = []
  for name in sorted(_event_files(workdir, "train")):
    for event in tf.compat.v1.train.summary_iterator(
        os.path.join(workdir, "tensorboard", "train", name)):
      steps += [event.step] if event.summary.value else []
  assert steps == list(range(metric_writers.ROTATE_AFTER_FLUSHES + 1))


def test_local_disk_keeps_one_line_per_log_point_and_one_event_file(tmp_path):
  w = metric_writers.MetricWriter(workdir=str(tmp_path))
  for step in (2, 4):
    w.write_scalars(step, {"train/loss": float(step)})
    w.flush()
    with open(tmp_path / "metrics.jsonl") as f:
      assert json.loads(f.read().splitlines()[-1])["step"] == step  # Written at once.
  w.close()
  assert len(_event_files(str(tmp_path), "train")) == 1
  assert not os.path.exists(tmp_path / metric_writers.PARTS_DIR)

"""Checkpoints in a real run: layout, metadata, exact resume after SIGKILL, SIGTERM, topology."""
import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import tensorflow as tf

import cli

BASE = ["--config.dataset=fashion_mnist", "--config.eval_num_examples=-1",
        "--config.deterministic=true"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  return cli.prepared_idx_data(str(tmp_path_factory.mktemp("data")), seed=6)


def _weights(step_dir):
  """Every saved tensor: weights (which TF files under the optimizer that also tracks them),
  optimizer slots, BatchNorm statistics and the step."""
  reader = tf.train.load_checkpoint(os.path.join(step_dir, "state", "ckpt"))
  names = sorted(k for k in reader.get_variable_to_shape_map() if "OBJECT_GRAPH" not in k)
  assert any("_trainable_variables" in k for k in names), names
  return {k: reader.get_tensor(k) for k in names}


def _steps(workdir):
  root = os.path.join(workdir, "checkpoints")
  return sorted(int(d) for d in os.listdir(root) if d.isdigit())


def test_layout_metadata_and_retention(tmp_path, data):
  workdir = str(tmp_path / "run")
  proc = cli.run_main("configs/mnist.py:smoke", workdir, *BASE, *data,
                      "--config.num_train_steps=20", "--config.steps_per_loop=2",
                      "--config.log_every_steps=2", "--config.eval_every_steps=4",
                      "--config.checkpoint_every_steps=2", "--config.max_to_keep=2",
                      "--config.keep_every_steps=8")
  assert proc.returncode == 0, proc.stderr[-3000:]
  # max_to_keep=2 keeps 18 and 20; keep_every_steps=8 keeps 8 and 16.
  assert _steps(workdir) == [8, 16, 18, 20]
  step_dir = os.path.join(workdir, "checkpoints", "20")
  assert sorted(os.listdir(step_dir)) == ["_CHECKPOINT_METADATA", "state"]
  with open(os.path.join(step_dir, "_CHECKPOINT_METADATA")) as f:
    meta = json.load(f)
  assert meta["step"] == 20
  assert meta["start_timestamp"] <= meta["commit_timestamp"]
  assert meta["num_replicas"] == 1
  assert meta["tensorflow_version"] == tf.__version__
  assert meta["vae_dist_version"]
  assert len(meta["config_hash"]) == 16
  assert np.isfinite(meta["metrics"]["eval/elbo"])
  state = os.listdir(os.path.join(step_dir, "state"))
  assert any(name.startswith("ckpt.data") for name in state)
  assert not [d for d in os.listdir(os.path.join(workdir, "checkpoints")) if "tmp" in d]


LONG = ["--config.num_train_steps=600", "--config.steps_per_loop=20",
        "--config.log_every_steps=20", "--config.eval_every_steps=600",
        "--config.checkpoint_every_steps=40", "--config.max_to_keep=100"]


def test_sigkill_after_second_checkpoint_then_resume_gives_the_same_weights(tmp_path, data):
  ref = str(tmp_path / "reference")
  proc = cli.run_main("configs/mnist.py:smoke", ref, *BASE, *data, *LONG)
  assert proc.returncode == 0, proc.stderr[-3000:]

  workdir = str(tmp_path / "killed")
  p = subprocess.Popen(cli.main_args("configs/mnist.py:smoke", workdir, *BASE, *data, *LONG),
                       cwd=cli.ROOT, env=cli.env(), stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
  root = os.path.join(workdir, "checkpoints")
  deadline = time.time() + 240
  while not (os.path.isdir(root) and len([d for d in os.listdir(root) if d.isdigit()]) >= 2):
    assert p.poll() is None, "the run ended before its second checkpoint"
    assert time.time() < deadline
    time.sleep(0.02)
  p.send_signal(signal.SIGKILL)
  p.wait()
  killed_at = _steps(workdir)[-1]
  assert killed_at < 600

  proc = cli.run_main("configs/mnist.py:smoke", workdir, *BASE, *data, *LONG)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"Resumed from {os.path.join(root, str(killed_at))}" in proc.stderr
  final, want = _weights(os.path.join(root, "600")), _weights(os.path.join(ref, "checkpoints",
                                                                           "600"))
  assert final.keys() == want.keys()
  for name in want:  # Bitwise: same noise, same batches, same order of operations.
    np.testing.assert_array_equal(final[name], want[name], err_msg=name)


def test_sigterm_saves_the_current_step_and_exits_cleanly(tmp_path, data):
  workdir = str(tmp_path / "run")
  args = ["--config.num_train_steps=1000000", "--config.steps_per_loop=10",
          "--config.log_every_steps=10", "--config.eval_every_steps=100000",
          "--config.checkpoint_every_steps=100000"]
  p = subprocess.Popen(cli.main_args("configs/mnist.py:smoke", workdir, *BASE, *data, *args),
                       cwd=cli.ROOT, env=cli.env(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
  metrics = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + 240
  while not (os.path.exists(metrics) and os.path.getsize(metrics) > 0):
    assert p.poll() is None
    assert time.time() < deadline
    time.sleep(0.05)
  p.send_signal(signal.SIGTERM)
  out, err = p.communicate(timeout=120)
  assert p.returncode == 143, err[-3000:]  # Saved and stopped early: "start me again".
  steps = _steps(workdir)
  assert len(steps) == 1 and steps[0] % 10 == 0 and 0 < steps[0] < 100000
  assert f"Stopped at step {steps[0]} after SIGTERM" in err
  last_logged = cli.read_metrics(workdir)[-1]["step"]
  assert last_logged == steps[0]
  assert "Run stopped at step" in out


def test_checkpoint_from_one_replica_resumes_on_four_and_back(tmp_path, data):
  workdir = str(tmp_path / "run")
  common = ["--config.steps_per_loop=2", "--config.log_every_steps=2",
            "--config.eval_every_steps=2", "--config.checkpoint_every_steps=2"]
  one = cli.run_main("configs/fashion_mnist.py:smoke", workdir, *BASE, *data, *common,
                     "--config.num_train_steps=4")
  assert one.returncode == 0, one.stderr[-3000:]
  before = _weights(os.path.join(workdir, "checkpoints", "4"))
  four = cli.run_main("configs/fashion_mnist.py:smoke", workdir, *BASE, *data, *common,
                      "--config.num_train_steps=6", "--config.strategy=mirrored",
                      "--config.num_cpu_devices=4")
  assert four.returncode == 0, four.stderr[-3000:]
  assert "with 4 replica(s)" in four.stderr and "Resumed from" in four.stderr
  with open(os.path.join(workdir, "checkpoints", "6", "_CHECKPOINT_METADATA")) as f:
    assert json.load(f)["num_replicas"] == 4
  back = cli.run_main("configs/fashion_mnist.py:smoke", workdir, *BASE, *data, *common,
                      "--config.num_train_steps=8")
  assert back.returncode == 0, back.stderr[-3000:]
  assert "Resumed from" in back.stderr
  assert _steps(workdir)[-1] == 8
  # The step-4 weights were restored (not re-initialised) on four replicas: step 6 is close.
  after = _weights(os.path.join(workdir, "checkpoints", "6"))
  diffs = [np.abs(after[k] - before[k]).max() for k in before if "_trainable_variables" in k]
  assert max(diffs) < 0.05


def test_restore_from_weights_only_starts_a_new_run(tmp_path, data):
  source = str(tmp_path / "source")
  common = ["--config.steps_per_loop=2", "--config.log_every_steps=2",
            "--config.eval_every_steps=2", "--config.checkpoint_every_steps=2"]
  assert cli.run_main("configs/mnist.py:smoke", source, *BASE, *data, *common,
                      "--config.num_train_steps=4").returncode == 0
  target = str(tmp_path / "target")
  step_dir = os.path.join(source, "checkpoints", "4")
  proc = cli.run_main("configs/mnist.py:smoke", target, *BASE, *data, *common,
                      "--config.num_train_steps=2", f"--config.restore_from={step_dir}",
                      "--config.restore_weights_only=true")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "(weights only)" in proc.stderr
  assert _steps(target) == [2]  # A new run: the step counter started at 0.
  full = str(tmp_path / "full")
  proc = cli.run_main("configs/mnist.py:smoke", full, *BASE, *data, *common,
                      "--config.num_train_steps=6", f"--config.restore_from={step_dir}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert _steps(full) == [6]  # Full state: went on from step 4.

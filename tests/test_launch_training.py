"""launch/multiworker.py running the real training: to its end, and with a worker killed."""
import glob
import math
import os
import signal
import subprocess
import sys
import time

import pytest

import cli
import datagen

TRAIN = ["--config.dataset=fashion_mnist", "--config.eval_num_examples=-1"]


@pytest.fixture(scope="module")
def idx_data(tmp_path_factory):
  root = tmp_path_factory.mktemp("data")
  datagen.write_idx_dataset(root / "idx", num_train=96, num_test=20, seed=4)
  return str(root / "idx"), str(root / "tfds")


def _launcher(workdir, idx_data, *extra):
  return [sys.executable, "launch/multiworker.py", "--num_workers=2",
          "--config=configs/mnist.py:smoke", f"--workdir={workdir}", "--", *TRAIN,
          *cli.data_flags(*idx_data), *extra]


def test_two_worker_training_runs_to_its_end(tmp_path, idx_data):
  # The data dir is empty: the chief prepares the data while the other worker waits.
  workdir = str(tmp_path / "run")
  proc = subprocess.run(_launcher(workdir, idx_data), cwd=cli.ROOT, env=cli.env(),
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert "[worker 0]" in proc.stdout + proc.stderr
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "4"))
  assert not glob.glob(os.path.join(workdir, "checkpoints", "*tmp*"))
  for run in ("train", "eval"):
    assert len(glob.glob(os.path.join(workdir, "tensorboard", run, "events.*"))) == 1
  evals = [r for r in cli.read_metrics(workdir) if "eval/elbo" in r]
  assert evals[-1]["step"] == 4 and math.isfinite(evals[-1]["eval/elbo"])


def test_killing_a_worker_stops_the_launcher_and_the_other_worker(tmp_path, idx_data):
  workdir = str(tmp_path / "run")
  # Long enough that the workers are still training when one is killed.
  launcher = subprocess.Popen(
      _launcher(workdir, idx_data, "--config.num_train_steps=100000",
                "--config.checkpoint_every_steps=1000", "--config.eval_every_steps=1000",
                "--config.log_every_steps=2"),
      cwd=cli.ROOT, env=cli.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      start_new_session=True)
  try:
    deadline = time.time() + 240
    metrics = os.path.join(workdir, "metrics.jsonl")
    while not (os.path.exists(metrics) and os.path.getsize(metrics) > 0):
      assert launcher.poll() is None, launcher.stdout.read()[-3000:]
      assert time.time() < deadline, "training did not start"
      time.sleep(0.5)
    workers = _children(launcher.pid)
    assert len(workers) == 2, workers
    os.kill(workers[1], signal.SIGKILL)
    killed_at = time.time()
    launcher.wait(timeout=60)
    assert time.time() - killed_at < 60
    assert launcher.returncode != 0
    time.sleep(0.5)
    for pid in workers:
      assert not _alive(pid)
  finally:
    if launcher.poll() is None:
      os.killpg(launcher.pid, signal.SIGKILL)


def _children(pid):
  out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
  return [int(p) for p in out.stdout.split()]


def _alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  with open(f"/proc/{pid}/stat") as f:  # A zombie is gone for our purposes.
    return f.read().split()[2] != "Z"

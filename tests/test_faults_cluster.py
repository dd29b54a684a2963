"""Multi-worker faults without a launcher: a worker that never starts, a worker lost mid-run.

Each worker is a real `python -m vae_dist.main` process with its own TF_CONFIG on loopback ports,
as a user starting workers by hand on several machines would run them.
"""
import os
import re
import subprocess
import time

import pytest

import cli
import datagen

TRAIN = ["--config.dataset=fashion_mnist", "--config.eval_num_examples=-1",
         "--config.strategy=multi_worker_mirrored", "--config.num_image_examples=0",
         "--config.num_scatter_examples=0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp("data")
  datagen.write_idx_dataset(root / "idx", num_train=96, num_test=20, seed=11)
  return cli.data_flags(str(root / "idx"), str(root / "tfds"))


def _start(workdir, data, ports, index, *extra):
  return subprocess.Popen(
      cli.main_args("configs/mnist.py:smoke", workdir, *TRAIN, *data, *extra), cwd=cli.ROOT,
      env=cli.env(TF_CONFIG=cli.tf_config([f"localhost:{p}" for p in ports], index)), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)


def _error_lines(stderr):
  return [line for line in stderr.splitlines() if line.startswith("error: ")]


def test_a_worker_that_never_starts_is_named_after_the_wait(tmp_path, data):
  ports = cli.free_ports(2)
  workdir = str(tmp_path / "run")
  t0 = time.time()
  worker = _start(workdir, data, ports, 0, "--config.cluster_wait_seconds=3")
  _, stderr = worker.communicate(timeout=180)
  assert worker.returncode == 1
  errors = _error_lines(stderr)
  assert len(errors) == 1, stderr[-3000:]
  assert errors[0] == (
      "error: config.cluster_wait_seconds: worker worker 0 waited 3 s for the cluster in "
      f"TF_CONFIG and these workers did not come up: worker 1 at localhost:{ports[1]}. Start "
      "every worker with the same TF_CONFIG cluster (launch/multiworker.py does), or wait longer "
      "with a larger value."), errors[0]
  assert "Traceback" not in stderr
  assert time.time() - t0 < 120
  assert not os.path.exists(workdir)


def test_a_lost_worker_stops_the_other_and_the_run_resumes(tmp_path, data):
  ports = cli.free_ports(2)
  workdir = str(tmp_path / "run")
  long_run = ["--config.num_train_steps=1000000", "--config.checkpoint_every_steps=10",
              "--config.log_every_steps=10", "--config.eval_every_steps=1000000"]
  workers = [_start(workdir, data, ports, i, *long_run) for i in range(2)]
  try:
    deadline = time.time() + 240
    while not os.path.isdir(os.path.join(workdir, "checkpoints", "10")):
      assert all(w.poll() is None for w in workers), workers[0].communicate()[1][-3000:]
      assert time.time() < deadline, "training did not start"
      time.sleep(0.2)
    workers[1].kill()
    killed_at = time.time()
    _, stderr = workers[0].communicate(timeout=180)
    # TensorFlow aborts the collectives when the peer's connection drops (or, at the latest,
    # when its health check gives up: about a minute).
    assert time.time() - killed_at < 120
  finally:
    for w in workers:
      if w.poll() is None:
        w.kill()
  assert workers[0].returncode == 1
  errors = _error_lines(stderr)
  assert len(errors) == 1, stderr[-3000:]
  # The worker is named when TensorFlow's error names it (the gRPC path does, not every path).
  assert re.match(r"error: lost contact with (worker /job:worker/replica:0/task:1 \(.+\)|"
                  r"another worker) near step \d+\. ", errors[0]), errors[0]
  assert "Committed checkpoints are unchanged (latest: step " in errors[0]
  committed = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints"))
                     if d.isdigit())
  # Both workers started again with the same command: they resume from the latest checkpoint.
  ports = cli.free_ports(2)
  total = committed[-1] + 4
  again = [_start(workdir, data, ports, i, f"--config.num_train_steps={total}")
           for i in range(2)]
  outputs = [w.communicate(timeout=240) for w in again]
  assert [w.returncode for w in again] == [0, 0], outputs[0][1][-3000:]
  resumed = os.path.join(workdir, "checkpoints", str(committed[-1]))
  assert f"Resumed from {resumed}" in outputs[0][1]
  assert os.path.isdir(os.path.join(workdir, "checkpoints", str(total)))

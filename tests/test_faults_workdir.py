"""Faults around the workdir: busy, not creatable, failing writes, and processes killed at random.

Every case checks the message a user reads and that `main` can simply be started again.
"""
import json
import os
import random
import resource
import signal
import socket
import subprocess
import time

import pytest
import tensorflow as tf

import cli
from vae_dist.errors import WorkdirError
from vae_dist.train import workdir_lock

BASE = ["--config.dataset=fashion_mnist", "--config.eval_num_examples=-1",
        "--config.num_image_examples=0", "--config.num_scatter_examples=0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  return cli.prepared_idx_data(str(tmp_path_factory.mktemp("data")), seed=9)


def _error_lines(stderr):
  return [line for line in stderr.splitlines() if line.startswith("error: ")]




def _wait_for(predicate, proc, seconds=180):
  deadline = time.time() + seconds
  while not predicate():
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    assert time.time() < deadline, "timed out"
    time.sleep(0.05)


def test_second_run_on_a_busy_workdir_refuses_naming_the_first(tmp_path, data):
  workdir = str(tmp_path / "run")
  first = subprocess.Popen(
      cli.main_args("configs/mnist.py:smoke", workdir, *BASE, *data,
                    "--config.num_train_steps=1000000", "--config.checkpoint_every_steps=20",
                    "--config.eval_every_steps=1000000", "--config.log_every_steps=20"),
      cwd=cli.ROOT, env=cli.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    _wait_for(lambda: cli.committed_steps(workdir), first)
    second = cli.run_main("configs/mnist.py:smoke", workdir, *BASE, *data, timeout=120)
    assert second.returncode == 1
    errors = _error_lines(second.stderr)
    assert len(errors) == 1, second.stderr[-2000:]
    assert f"the workdir {workdir} is in use by another run (pid {first.pid} on host " in errors[0]
    assert "python -m vae_dist.main --config=configs/mnist.py:smoke" in errors[0]
    assert "Traceback" not in second.stderr
    # The first run did not notice: it stops on SIGTERM at a step boundary, as usual.
    first.send_signal(signal.SIGTERM)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 143, stderr[-3000:]
    assert "Stopped at step" in stderr
  finally:
    if first.poll() is None:
      first.kill()
  # Once the first run has ended the workdir is free again, and the run resumes.
  last = cli.committed_steps(workdir)[-1]
  again = cli.run_main("configs/mnist.py:smoke", workdir, *BASE, *data,
                       f"--config.num_train_steps={last + 2}", timeout=120)
  assert again.returncode == 0, again.stderr[-3000:]
  assert f"Resumed from {os.path.join(workdir, 'checkpoints', str(last))}" in again.stderr
  assert cli.committed_steps(workdir)[-1] == last + 2


def test_workdir_that_cannot_be_created(tmp_path, data):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  workdir = str(blocker / "run")
  proc = cli.run_main("configs/mnist.py:smoke", workdir, *BASE, *data, timeout=120)
  assert proc.returncode == 1
  errors = _error_lines(proc.stderr)
  assert errors == [f"error: cannot create the workdir {workdir}: {blocker} is not a directory. "
                    "Choose a writable location with --workdir."], proc.stderr[-2000:]
  assert blocker.read_text() == "not a directory"


def _limit_file_size(limit):
  def apply():
    # Writes past `limit` bytes fail with EFBIG ("File too large"), as on a full disk, instead
    # of the default SIGXFSZ that would kill the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
  return apply


def test_workdir_where_writes_fail_stops_before_training(tmp_path, data):
  workdir = str(tmp_path / "run")
  proc = subprocess.run(cli.main_args("configs/mnist.py:smoke", workdir, *BASE, *data),
                        cwd=cli.ROOT, env=cli.env(), capture_output=True, text=True,
                        timeout=120, preexec_fn=_limit_file_size(64))
  assert proc.returncode == 1
  errors = _error_lines(proc.stderr)
  assert errors == [f"error: cannot write to the workdir {workdir}: File too large. Free space "
                    "or choose another location with --workdir."], proc.stderr[-2000:]
  assert "Training from step" not in proc.stderr
  assert sorted(os.listdir(workdir)) == ["lock"]  # Empty: nothing else was written.
  # With the disk usable again, the same command runs.
  proc = cli.run_main("configs/mnist.py:smoke", workdir, *BASE, *data, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]


def test_object_store_lease_refuses_a_live_run_and_takes_over_a_gone_one():
  workdir = f"ram://vae_dist_lease_test_{os.getpid()}/run"
  holder = workdir_lock.WorkdirLock(workdir)
  holder.acquire()
  try:
    with pytest.raises(WorkdirError, match=rf"in use by another run \(pid {os.getpid()} on "
                       r"host .*last heartbeat \d+ s ago\).*If that run is gone, delete "):
      workdir_lock.WorkdirLock(workdir).acquire()
  finally:
    holder.release()
  # Released: the next run gets it at once.
  with workdir_lock.WorkdirLock(workdir):
    pass
  path = workdir + "/lock"
  # A lease whose heartbeat stopped long ago (its host was preempted) is taken over.
  stale = {"host": "elsewhere", "pid": 1, "started": 0, "heartbeat": time.time() - 3600}
  _leave_lease(path, stale)
  with workdir_lock.WorkdirLock(workdir):
    pass
  # So is a fresh lease of a process of this host that no longer exists.
  dead = subprocess.Popen(["true"])
  dead.wait()
  _leave_lease(path, {"host": socket.gethostname(), "pid": dead.pid, "started": 0,
                      "heartbeat": time.time()})
  with workdir_lock.WorkdirLock(workdir):
    pass


def _leave_lease(path, record):
  """Writes a lease file as another run would have left it."""
  with tf.io.gfile.GFile(path, "w") as f:
    f.write(json.dumps(record))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_killed_at_a_random_point_then_started_again_finishes(tmp_path, data, seed):
  """SIGKILL or SIGTERM at a random moment of training, with a save in flight most of the time.

  Checkpoints every step (steps_per_loop 1, async saves of a few milliseconds against steps of
  a few milliseconds) so that a random moment often falls inside a save.
  """
  rng = random.Random(seed)
  workdir = str(tmp_path / "run")
  total = 160
  args = cli.main_args("configs/mnist.py:smoke", workdir, *BASE, *data,
                       f"--config.num_train_steps={total}", "--config.steps_per_loop=1",
                       "--config.checkpoint_every_steps=1", "--config.log_every_steps=40",
                       "--config.eval_every_steps=160", "--config.max_to_keep=2")
  proc = subprocess.Popen(args, cwd=cli.ROOT, env=cli.env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  try:
    _wait_for(lambda: cli.committed_steps(workdir), proc)
    time.sleep(rng.uniform(0.0, 1.5))
    sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
  if sig == signal.SIGTERM:  # Saves at the next step boundary; 143 unless it had finished.
    assert (proc.returncode, "Stopped at step" in stderr) in ((143, True), (0, False)), \
        stderr[-3000:]
    assert "Stopped at step" in stderr or "Run finished" in stderr
  else:
    assert proc.returncode == -signal.SIGKILL
  resumable = cli.committed_steps(workdir)
  assert resumable, "no committed checkpoint survived"
  again = subprocess.run(args, cwd=cli.ROOT, env=cli.env(), capture_output=True, text=True,
                         timeout=300)
  assert again.returncode == 0, again.stderr[-3000:]
  if resumable[-1] < total:
    assert (f"Resumed from {os.path.join(workdir, 'checkpoints', str(resumable[-1]))}"
            in again.stderr)
  root = os.path.join(workdir, "checkpoints")
  assert not [d for d in os.listdir(root) if not d.isdigit()], os.listdir(root)
  assert cli.committed_steps(workdir)[-1] == total
  records = cli.read_metrics(workdir)  # Every line whole: a line cut by the kill is dropped.
  evals = [r for r in records if "eval/elbo" in r]
  assert evals[-1]["step"] == total
  # Steps logged after the last checkpoint before the kill are logged once, by the resumed run.
  train_steps = [r["step"] for r in records if "train/loss" in r]
  assert train_steps == sorted(set(train_steps)), train_steps

"""Runs the real command line (`python -m vae_dist.main ...`) in a subprocess for tests."""
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from launch.multiworker import free_ports  # noqa: E402  # pylint: disable=unused-import
from launch.multiworker import tf_config  # noqa: E402  # pylint: disable=unused-import


def env(**extra):
  e = dict(os.environ)
  e.update({"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT, "CUDA_VISIBLE_DEVICES": ""})
  e.pop("TF_CONFIG", None)
  e.update(extra)
  return e


def main_args(config, workdir, *overrides):
  return [sys.executable, "-m", "vae_dist.main", f"--config={config}", f"--workdir={workdir}",
          *overrides]


def run_main(config, workdir, *overrides, timeout=300, **env_extra):
  """Runs main to its end; returns the CompletedProcess (stdout and stderr as text)."""
  return subprocess.run(main_args(config, workdir, *overrides), cwd=ROOT, env=env(**env_extra),
                        capture_output=True, text=True, timeout=timeout)


def start_until_metrics(args, workdir, *, env, timeout=240):
  """Starts a training command and returns its Popen once it has written a metrics line.

  For tests that stop a run mid-way (signals, preemption notices): the run is then past its
  tracing and first host loop. The caller kills the process if its own checks fail.
  """
  proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  metrics = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + timeout
  try:
    while not (os.path.exists(metrics) and os.path.getsize(metrics) > 0):
      assert proc.poll() is None, proc.communicate()[1][-3000:]
      assert time.time() < deadline, f"no metrics line in {timeout} s"
      time.sleep(0.1)
  except BaseException:
    if proc.poll() is None:
      proc.kill()
    raise
  return proc


def finish_or_kill(proc, timeout=120):
  """(stdout, stderr) of a stopped-by-the-test process once it ends; killed if it outlives us."""
  try:
    return proc.communicate(timeout=timeout)
  finally:
    if proc.poll() is None:
      proc.kill()


def committed_steps(workdir):
  """Checkpoint steps of a workdir whose commit finished (their metadata written last)."""
  root = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(root):
    return []
  return sorted(int(d) for d in os.listdir(root)
                if d.isdigit() and os.path.exists(os.path.join(root, d, "_CHECKPOINT_METADATA")))


def one_error(proc):
  """The one `error:` line of a failed command, which must have no traceback."""
  assert proc.returncode != 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
  assert len(lines) == 1, proc.stderr[-3000:]
  return lines[0]


def data_flags(idx_dir, data_dir):
  return [f"--config.manual_dir={idx_dir}", f"--config.data_dir={data_dir}"]


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def prepared_idx_data(root, *, seed, num_train=96, num_test=20):
  """Data flags for a tiny Fashion-MNIST in IDX files under `root`, its TFDS copy prepared.

  Preparing takes a few seconds; doing it here, with a 2-step run of the real command, keeps it
  out of tests that time or kill what they run.
  """
  import datagen  # pylint: disable=g-import-not-at-top
  datagen.write_idx_dataset(os.path.join(root, "idx"), num_train=num_train, num_test=num_test,
                            seed=seed)
  flags = data_flags(os.path.join(root, "idx"), os.path.join(root, "tfds"))
  proc = run_main("configs/mnist.py:smoke", os.path.join(root, "warmup"),
                  "--config.dataset=fashion_mnist", *flags, "--config.num_train_steps=2",
                  "--config.steps_per_loop=2", "--config.log_every_steps=2",
                  "--config.eval_every_steps=2", "--config.checkpoint_every_steps=2")
  assert proc.returncode == 0, proc.stderr[-2000:]
  return flags

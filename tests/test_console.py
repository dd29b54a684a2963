"""What a user sees on the console: a quiet run, --help, --print_config, --dry_run, Ctrl-C, cadences.

Every command runs for real in a subprocess WITHOUT the TF_CPP_MIN_LOG_LEVEL the other tests set
(tests/cli.py), so the console is the one a user gets by default.
"""
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

import cli
from conftest import load_config
import trained_run_fixture
from vae_dist.config import checks
from vae_dist import console
from vae_dist.report import progress
from vae_dist.train import preemption

# TensorFlow's C++ start-up lines and TFDS' INFO lines: none may reach a default console.
NOISE = re.compile(r"InitializeLog|port\.cc|cudart_stub|cpu_feature_guard|To enable the following "
                   r"instructions|cuInit|\] Creating a tf\.data\.Dataset|dataset_info\.py|"
                   r"logging_logger\.py|tf_record_dataset_op")


def _user_env(**extra):
  env = cli.env(**extra)
  env.pop("TF_CPP_MIN_LOG_LEVEL")
  return env


def _main(config, workdir, *flags, cwd=cli.ROOT, timeout=300):
  return subprocess.run(cli.main_args(config, workdir, *flags), cwd=cwd, env=_user_env(),
                        capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  return cli.prepared_idx_data(str(tmp_path_factory.mktemp("console")), seed=11)


def test_smoke_run_shows_vae_dist_lines_only_and_records_what_ran(tmp_path, data):
  workdir = str(tmp_path / "run")
  proc = _main("configs/mnist.py:smoke", workdir, "--config.dataset=fashion_mnist", *data)
  assert proc.returncode == 0, proc.stderr[-3000:]
  console = proc.stdout + proc.stderr
  assert not [line for line in console.splitlines() if NOISE.search(line)], console
  for words in ("with 1 replica(s)", "Training from step 0 to 4 (2 steps per host loop)",
                "step 4/4: loss", "eval at step 4", "trainable parameters"):
    assert words in proc.stderr, proc.stderr
  assert "Run finished" in proc.stdout
  # What ran: versions, host and (this is a checkout) the git commit, outside config.json.
  with open(os.path.join(workdir, "run_info.json")) as f:
    [start] = json.load(f)["starts"]
  assert re.fullmatch(r"[0-9a-f]{40}", start["git_commit"]) and "git_dirty" in start
  assert start["tensorflow_version"] and start["keras_version"] and start["host"]
  assert start["trainable_parameters"] > 1000
  # The command as it can be typed again (Python gives -m's module as a file path).
  assert start["command"][:3] == ["python", "-m", "vae_dist.main"]
  assert start["command"][3:] == proc.args[3:]
  with open(os.path.join(workdir, "model_summary.txt")) as f:
    assert f"Trainable parameters: {start['trainable_parameters']:,}" in f.read()
  with open(os.path.join(workdir, "config.json")) as f:
    assert "git_commit" not in f.read()
  metadata = os.path.join(workdir, "checkpoints", "4", "metadata.json")
  if os.path.exists(metadata):
    with open(metadata) as f:
      assert json.load(f)["run"]["git_commit"] == start["git_commit"]


def test_verbosity_brings_tensorflow_lines_back_and_dry_run_writes_nothing(tmp_path, data):
  workdir = str(tmp_path / "run")
  quiet = _main("mnist:smoke", workdir, "--config.dataset=fashion_mnist", *data, "--dry_run")
  assert quiet.returncode == 0, quiet.stderr[-3000:]
  assert "Dry run: the run would start." in quiet.stdout
  assert "per replica 8" in quiet.stdout and "96 train examples" in quiet.stdout
  assert "latent_dim: 2" in quiet.stdout  # The resolved config, every field.
  assert not NOISE.search(quiet.stderr), quiet.stderr
  assert not os.path.exists(workdir)
  loud = _main("mnist:smoke", workdir, "--config.dataset=fashion_mnist", *data, "--dry_run",
               "--verbosity=1")
  assert loud.returncode == 0, loud.stderr[-3000:]
  assert "oneDNN" in loud.stderr or "dataset_info.py" in loud.stderr, loud.stderr
  assert not os.path.exists(workdir)
  broken = _main("mnist:smoke", workdir, "--config.dataset=fashion_mnist", *data, "--dry_run",
                 "--config.eval_split=nope")
  assert broken.returncode == 1
  assert [line for line in broken.stderr.splitlines() if line.startswith("error: ")] == [
      "error: config.eval_split: 'nope' is not a split of data set 'fashion_mnist', which has "
      "test, train."], broken.stderr
  assert not os.path.exists(workdir)


def test_help_of_every_command_exits_0_and_says_how_to_see_the_config(tmp_path):
  procs = {tool: subprocess.Popen([sys.executable, "-m", f"vae_dist.{tool}", "--help"],
                                  cwd=str(tmp_path), env=_user_env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
           for tool in ("main", "generate", "evaluate", "export")}
  outs = {}
  for tool, proc in procs.items():
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, (tool, err[-2000:])
    assert "Flags:" in out and "--verbosity=1" in out and "--workdir:" in out, (tool, out)
    assert not NOISE.search(err), (tool, err)
    outs[tool] = out
  assert outs["export"].startswith("A trained run as a SavedModel")
  main_help = outs["main"]
  assert main_help.startswith("Trains a VAE")
  assert "--print_config" in main_help and "--dry_run" in main_help and "--config:" in main_help
  shipped = sorted(f[:-3] for f in os.listdir(os.path.join(cli.ROOT, "configs"))
                   if f.endswith(".py") and not f.startswith("_"))
  assert f"Shipped configs: {', '.join(shipped)}." in main_help


def test_shipped_configs_are_named_from_anywhere(tmp_path):
  ok = subprocess.run([sys.executable, "-m", "vae_dist.main", "--config=fashion_mnist:smoke",
                       "--config.latent_dim=3", "--print_config"], cwd=str(tmp_path),
                      env=_user_env(), capture_output=True, text=True, timeout=60)
  assert ok.returncode == 0, ok.stderr
  assert "latent_dim: 3" in ok.stdout and "name: fashion_mnist" in ok.stdout
  for value, words in (("nope", "no shipped config of that name (shipped: cartoon, default, "),
                       ("mnist:big", "mnist takes no argument 'big'"),
                       ("missing/file.py", "the config file does not exist")):
    bad = subprocess.run([sys.executable, "-m", "vae_dist.main", f"--config={value}"],
                         cwd=str(tmp_path), env=_user_env(), capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2
    assert words in cli.one_error(bad), bad.stderr


def test_ctrl_c_saves_at_the_next_boundary_and_the_run_resumes(tmp_path, data):
  workdir = str(tmp_path / "run")
  loop = ["--config.log_every_steps=5", "--config.eval_every_steps=100000",
          "--config.checkpoint_every_steps=100000"]
  proc = cli.start_until_metrics(
      cli.main_args("configs/mnist.py:smoke", workdir, "--config.dataset=fashion_mnist", *data,
                    "--config.num_train_steps=100000", *loop), workdir, env=_user_env())
  proc.send_signal(signal.SIGINT)
  out, err = cli.finish_or_kill(proc)
  assert proc.returncode == preemption.RESTARTABLE_EXIT_CODE, err[-3000:]
  [step] = cli.committed_steps(workdir)
  assert 0 < step < 100000 and step % 5 == 0
  assert "Ctrl-C: saving a checkpoint at the next step boundary" in err
  assert f"Stopped at step {step} after Ctrl-C" in err
  assert "Traceback" not in err and "KeyboardInterrupt" not in err
  assert f"Run stopped at step {step}" in out

  again = subprocess.run(
      cli.main_args("configs/mnist.py:smoke", workdir, "--config.dataset=fashion_mnist", *data,
                    f"--config.num_train_steps={step + 5}", *loop),
      cwd=cli.ROOT, env=_user_env(), capture_output=True, text=True, timeout=300)
  assert again.returncode == 0, again.stderr[-3000:]
  assert f"Resumed from {os.path.join(workdir, 'checkpoints', str(step))}" in again.stderr
  with open(os.path.join(workdir, "final_metrics.json")) as f:
    assert json.load(f)["step"] == step + 5


def test_cadences_need_no_arithmetic(tmp_path, data):
  # The example: log every 50 steps with the MNIST recipe (eval every 1875).
  config = load_config("mnist")
  config.log_every_steps = 50
  checks.validate(config)
  assert config.steps_per_loop == 25
  # Every shipped recipe draws a curve of at least 8 points in a 400-step try.
  for name, arg in (("mnist", None), ("fashion_mnist", None), ("fashion_mnist", "quick"),
                    ("fashion_mnist_fast", None), ("cartoon", None), ("default", None)):
    config = load_config(name, arg)
    checks.validate(config)
    assert 400 // config.log_every_steps >= 8, (name, config.log_every_steps)
    for field in ("log_every_steps", "eval_every_steps", "checkpoint_every_steps"):
      assert config[field] % config.steps_per_loop == 0
  # On the command line: cadences 3 and 4 run with a loop of 1 and log at 3, 6, 9, 12.
  workdir = str(tmp_path / "run")
  proc = cli.run_main("configs/mnist.py:smoke", workdir, "--config.dataset=fashion_mnist", *data,
                      "--config.num_train_steps=12", "--config.log_every_steps=3",
                      "--config.eval_every_steps=4", "--config.checkpoint_every_steps=4")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "(1 steps per host loop)" in proc.stderr
  assert [r["step"] for r in cli.read_metrics(workdir) if "train/loss" in r] == [3, 6, 9, 12]


def test_ctrl_c_during_evaluate_is_one_line(tmp_path, tmp_path_factory):
  run = trained_run_fixture.shared_run(tmp_path_factory)
  out = str(tmp_path / "iwae.json")
  log = tmp_path / "stderr.txt"
  with open(log, "w") as err:
    proc = subprocess.Popen(
        [sys.executable, "-m", "vae_dist.evaluate", f"--workdir={run['workdir']}",
         "--num_samples=200000", f"--out={out}"], cwd=cli.ROOT, env=_user_env(),
        stdout=subprocess.DEVNULL, stderr=err)
    try:
      deadline = time.time() + 240
      while "Batch: global" not in log.read_text():  # Evaluating: past start-up.
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.time() < deadline
        time.sleep(0.2)
      # Inside the first IWAE step (K=200,000: minutes of one TensorFlow call), where Python's
      # own KeyboardInterrupt never arrives; the Ctrl-C watch ends the process within seconds.
      time.sleep(6)
      proc.send_signal(signal.SIGINT)
      sent = time.time()
      proc.wait(timeout=60)
      assert time.time() - sent < 30
    finally:
      if proc.poll() is None:
        proc.kill()
  text = log.read_text()
  assert proc.returncode == 130, text[-3000:]
  assert "Interrupted (Ctrl-C)" in text and "Traceback" not in text
  assert not os.path.exists(out)


class _Terminal(io.StringIO):

  def isatty(self):
    return True


def test_progress_line_is_redrawn_on_a_terminal_and_silent_in_a_log():
  screen = _Terminal()
  shown = progress.LoopProgress(0, 400, stream=screen)
  first = shown.line(100, now=10.0)
  assert first == "step 100/400 (25%)"  # The first loop traces: no rate yet.
  assert shown.line(200, now=20.0) == "step 200/400 (50%)  10.0 steps/s  ETA 0:20"
  shown.update(400)
  assert screen.getvalue().startswith("\r\x1b[Kstep 400/400 (100%)")
  assert screen.getvalue().endswith("\n")  # The last one stays on the screen.
  log = io.StringIO()
  progress.LoopProgress(0, 400, stream=log).update(100)
  assert log.getvalue() == ""
  assert progress.clock(3725) == "1:02:05" and progress.clock(65) == "1:05"


def test_only_vae_dist_commands_filter_the_console():
  assert console.is_command(["x"], ["python", "-m", "vae_dist.main", "--config=mnist"])
  assert console.is_command(["/venv/bin/vae-dist-export"], ["python", "/venv/bin/vae-dist-export"])
  assert not console.is_command(["x"], ["python", "-m", "pytest", "tests"])
  assert not console.is_command(["x"], ["python", "-m", "vae_dist.benchmark"])
  assert console.wants_verbose(["x", "--verbosity=1"]) and console.wants_verbose(["x", "-v", "1"])
  assert not console.wants_verbose(["x", "--config=mnist"])


_LONG_HOST_LOOP = r"""
import sys, threading, time
import tensorflow as tf
from vae_dist import cli, ctrl_c
from vae_dist.train import preemption
ctrl_c.start(cli.INTERRUPTED_LINE, cli.INTERRUPTED_EXIT_CODE)
watch = preemption.PreemptionWatch()
watch.start()
running = tf.Variable(1)
x = tf.random.normal([64, 64])

@tf.function
def host_loop():  # One TensorFlow call that lasts until `running` is cleared, like a host loop.
  return tf.while_loop(lambda y: running.read_value() > 0, lambda y: [tf.tanh(y @ x)], [x])

threading.Timer(float(sys.argv[1]), lambda: running.assign(0)).start()
print("looping", flush=True)
host_loop()
print("returned", watch.reason, flush=True)
"""


def test_first_ctrl_c_in_a_long_host_loop_is_acknowledged_at_once(tmp_path):
  """The training loop's Ctrl-C line appears when Ctrl-C is pressed, not when the loop returns."""
  loop_seconds = 12.0
  proc = subprocess.Popen([sys.executable, "-c", _LONG_HOST_LOOP, str(loop_seconds)],
                          cwd=cli.ROOT, env=_user_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  arrivals = []  # (seconds since start, line) of stdout and stderr.
  start = time.time()

  def read(stream):
    for line in stream:
      arrivals.append((time.time() - start, line.rstrip("\n")))

  readers = [threading.Thread(target=read, args=(s,), daemon=True)
             for s in (proc.stdout, proc.stderr)]
  for r in readers:
    r.start()
  try:
    deadline = time.time() + 120
    while not any(line == "looping" for _, line in arrivals):
      assert proc.poll() is None and time.time() < deadline, arrivals
      time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    sent = time.time() - start
    assert proc.wait(timeout=120) == 0, arrivals
  finally:
    if proc.poll() is None:
      proc.kill()
  for r in readers:
    r.join(timeout=10)
  [(acked, _)] = [a for a in arrivals if "Ctrl-C: saving a checkpoint at the next step" in a[1]]
  [(returned, line)] = [a for a in arrivals if a[1].startswith("returned")]
  assert line == "returned Ctrl-C"  # The loop would save at its boundary.
  assert acked - sent < 3.0, arrivals
  assert returned - acked > 3.0, arrivals  # Said while the loop still ran, not after it.

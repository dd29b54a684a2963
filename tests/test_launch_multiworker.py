"""Tests for launch/multiworker.py with real multi-worker TensorFlow programs.

The TensorFlow workers (tests/mw_allreduce_worker.py) build MultiWorkerMirroredStrategy from the
TF_CONFIG the launcher gives them and all-reduce across processes, so a passing test means the
cluster description was consistent, not just that processes started.
"""
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, "tests")
sys.path.insert(0, REPO)

from launch import multiworker  # pylint: disable=g-import-not-at-top,wrong-import-position

LAUNCHER = os.path.join(REPO, "launch", "multiworker.py")
WORKER = os.path.join(TESTS, "mw_allreduce_worker.py")


def env_with_tests_on_path():
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (TESTS, env.get("PYTHONPATH")) if p)
  # Keep TensorFlow's start-up chatter down; it does not change what is tested.
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
  return env


def is_running(pid):
  """True while pid is a live (non-zombie) process."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except OSError:
    return False


def started_pids(stderr):
  return [int(p) for p in re.findall(r"\[launcher\] worker \d+ started, pid (\d+)", stderr)]


def test_free_ports_are_distinct_and_bindable():
  ports = multiworker.free_ports(4)
  assert len(set(ports)) == 4 and all(1024 <= p < 65536 for p in ports)


def test_tf_config():
  config = json.loads(multiworker.tf_config(["localhost:1", "localhost:2"], 1))
  assert config == {"cluster": {"worker": ["localhost:1", "localhost:2"]},
                    "task": {"type": "worker", "index": 1}}


def test_worker_command():
  cmd = multiworker.worker_command(["--config.name=a b"], python="py", module="vae_dist.main",
                                   config="configs/mnist.py", workdir="/w")
  # --config before any override (ml_collections requires it); the strategy override last.
  assert cmd == ["py", "-m", "vae_dist.main", "--config=configs/mnist.py", "--workdir=/w",
                 "--config.name=a b", "--config.strategy=multi_worker_mirrored"]
  cmd = multiworker.worker_command(["--config.strategy=mirrored"], python="py", module="m",
                                   config=None, workdir=None)
  assert cmd == ["py", "-m", "m", "--config.strategy=mirrored"]
  assert multiworker.worker_command(["bash", "-c", "x"], python="py", module="m", config=None,
                                    workdir=None) == ["bash", "-c", "x"]
  with pytest.raises(multiworker.LaunchError):
    multiworker.worker_command(["bash"], python="py", module="m", config="c", workdir=None)


def test_two_tensorflow_workers_all_reduce(tmp_path):
  hostile = "--config.name=a b; rm -rf / $(x) \"q\"\n`y`"
  proc = subprocess.run(
      [sys.executable, LAUNCHER, "--num_workers=2", "--module=mw_allreduce_worker",
       "--config=configs/default.py:smoke", f"--workdir={tmp_path / 'work dir'}",
       f"--worker_log_dir={tmp_path / 'logs'}", "--timeout_seconds=50", hostile,
       "--", "--config.seed=1"],
      capture_output=True, text=True, timeout=60, env=env_with_tests_on_path(), cwd=REPO)
  assert proc.returncode == 0, proc.stdout + proc.stderr

  lines = proc.stdout.splitlines()
  assert lines and all(re.match(r"\[worker [01]\] ", l) for l in lines)
  results = {}
  for line in lines:
    m = re.match(r"\[worker (\d)\] RESULT (.*)", line)
    if m:
      results[int(m.group(1))] = json.loads(m.group(2))
  assert sorted(results) == [0, 1]
  for index, result in results.items():
    assert result["task_id"] == index
    assert result["total"] == result["expected"] == 3.0
    assert result["extra_args"] == [
        "--config=configs/default.py:smoke", f"--workdir={tmp_path / 'work dir'}", hostile,
        "--config.seed=1", "--config.strategy=multi_worker_mirrored"]
  assert "RESULT" in (tmp_path / "logs" / "worker_1.log").read_text()


def test_failing_worker_stops_the_one_blocked_in_the_collective():
  # Worker 1 exits 3 after joining the cluster; worker 0 waits for it in the all-reduce (and
  # TensorFlow catches SIGTERM there, so this also exercises the SIGKILL escalation).
  began = time.monotonic()
  proc = subprocess.run(
      [sys.executable, LAUNCHER, "--num_workers=2", "--grace_period_seconds=2",
       "--", sys.executable, WORKER, "--exit_code_rank=1", "--exit_code=3"],
      capture_output=True, text=True, timeout=60, env=env_with_tests_on_path(), cwd=REPO)
  assert proc.returncode == 3, proc.stdout + proc.stderr
  assert time.monotonic() - began < 60
  pids = started_pids(proc.stderr)
  assert len(pids) == 2
  assert not any(is_running(p) for p in pids)
  assert "[worker 1] worker 1 exiting with 3 on purpose" in proc.stdout


# A worker that starts a child (to check whole process groups are stopped) and ignores SIGTERM
# (to check the SIGKILL after the grace period).
STUBBORN_WORKER = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
print("PIDS", os.getpid(), child.pid, flush=True)
time.sleep(300)
"""


def _read_lines(stream, out_queue):
  for line in iter(stream.readline, ""):
    out_queue.put(line)
  out_queue.put(None)


def start_stubborn_launcher():
  proc = subprocess.Popen(
      [sys.executable, LAUNCHER, "--num_workers=2", "--grace_period_seconds=1",
       "--", sys.executable, "-c", STUBBORN_WORKER],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
  lines = queue.Queue()
  threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True).start()
  pids = {}
  deadline = time.monotonic() + 30
  while len(pids) < 2 and time.monotonic() < deadline:
    try:
      line = lines.get(timeout=1)
    except queue.Empty:
      continue
    m = re.match(r"\[worker (\d)\] PIDS (\d+) (\d+)", line or "")
    if m:
      pids[int(m.group(1))] = (int(m.group(2)), int(m.group(3)))
  assert len(pids) == 2, "workers did not start"
  return proc, pids


def test_sigkilled_worker_stops_the_others_and_their_children():
  proc, pids = start_stubborn_launcher()
  try:
    os.kill(pids[1][0], signal.SIGKILL)
    rc = proc.wait(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert rc == 128 + signal.SIGKILL
  stderr = proc.stderr.read()
  assert "worker 1 failed" in stderr and "SIGKILL" in stderr
  deadline = time.monotonic() + 5
  everyone = [pid for pair in pids.values() for pid in pair]
  while any(is_running(p) for p in everyone) and time.monotonic() < deadline:
    time.sleep(0.1)
  assert not any(is_running(p) for p in everyone)


def test_launcher_sigterm_stops_every_worker():
  proc, pids = start_stubborn_launcher()
  try:
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert rc == 128 + signal.SIGTERM
  everyone = [pid for pair in pids.values() for pid in pair]
  deadline = time.monotonic() + 5
  while any(is_running(p) for p in everyone) and time.monotonic() < deadline:
    time.sleep(0.1)
  assert not any(is_running(p) for p in everyone)


def test_timeout_and_bad_arguments():
  proc = subprocess.run(
      [sys.executable, LAUNCHER, "--num_workers=1", "--timeout_seconds=1",
       "--grace_period_seconds=1", "--", sys.executable, "-c", "import time; time.sleep(60)"],
      capture_output=True, text=True, timeout=30)
  assert proc.returncode == multiworker.EXIT_TIMEOUT
  proc = subprocess.run([sys.executable, LAUNCHER, "--task_index=1"],
                        capture_output=True, text=True, timeout=30)
  assert proc.returncode == 2 and "--hosts" in proc.stderr
  proc = subprocess.run([sys.executable, LAUNCHER, "--hosts=a:1,b", "--task_index=0"],
                        capture_output=True, text=True, timeout=30)
  assert proc.returncode == 2 and "host:port" in proc.stderr


def test_hosts_and_task_index_start_only_this_hosts_worker():
  proc = subprocess.run(
      [sys.executable, LAUNCHER, "--hosts=10.0.0.1:2222,10.0.0.2:2222", "--task_index=1",
       "--", sys.executable, "-c", "import os; print(os.environ['TF_CONFIG'])"],
      capture_output=True, text=True, timeout=30)
  assert proc.returncode == 0, proc.stderr
  (line,) = proc.stdout.splitlines()
  assert line.startswith("[worker 1] ")
  assert json.loads(line[len("[worker 1] "):]) == {
      "cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]},
      "task": {"type": "worker", "index": 1}}


NOTICE_WORKER = """\
import os, sys
# Stand-in worker: every worker saves and stops on a preemption notice (143) in the first start,
# and finishes in the second; each counts its own starts next to the shared "checkpoint".
index = __import__("json").loads(os.environ["TF_CONFIG"])["task"]["index"]
marker = os.path.join(sys.argv[1], f"started_{index}")
starts = int(open(marker).read()) + 1 if os.path.exists(marker) else 1
open(marker, "w").write(str(starts))
# Like real workers, which agree on the step to stop at: nobody leaves before all have started.
import time
others = [os.path.join(sys.argv[1], f"started_{i}") for i in (0, 1)]
deadline = time.time() + 20
while time.time() < deadline and not all(
    os.path.exists(m) and int(open(m).read() or 0) >= starts for m in others):
  time.sleep(0.05)
sys.exit(143 if starts == 1 else 0)
"""


@pytest.mark.parametrize("max_restarts,expect", [(1, 0), (0, 143)])
def test_workers_stopped_on_a_preemption_notice_start_again(tmp_path, max_restarts, expect):
  program = tmp_path / "notice_worker.py"
  program.write_text(NOTICE_WORKER)
  proc = subprocess.run(
      [sys.executable, LAUNCHER, "--num_workers=2", f"--max_restarts={max_restarts}",
       "--grace_period_seconds=2", "--", sys.executable, str(program), str(tmp_path)],
      capture_output=True, text=True, timeout=60)
  # 143 is "saved, start me again": never a finished run; restarts are bounded.
  assert proc.returncode == expect, proc.stderr
  starts = 2 if max_restarts else 1
  assert {(tmp_path / f"started_{i}").read_text() for i in (0, 1)} == {str(starts)}
  assert ("stopped on a preemption notice (status 143)" in proc.stderr) == bool(max_restarts)

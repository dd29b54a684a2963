"""Tests for launch/slurm.sbatch, run with bash against a fake `srun`.

The fake srun starts the job step's tasks on this machine with the SLURM_* variables a real step
sets, so the workers build MultiWorkerMirroredStrategy from SlurmClusterResolver (the recipe in
tests/mw_allreduce_worker.py, selected by VAE_DIST_CLUSTER=slurm exactly as the training program
must do) and all-reduce across the two processes.
"""
import json
import os
import re
import socket
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, "tests")
SCRIPT = os.path.join(REPO, "launch", "slurm.sbatch")

FAKE_SRUN = textwrap.dedent("""\
    #!{python}
    # Runs the step's tasks locally, all on "localhost", with the variables srun would set, and
    # labels their output lines "<rank>: " like srun --label.
    import json, os, subprocess, sys, threading
    args = sys.argv[1:]
    options = []
    while args and args[0].startswith("-"):
      options.append(args.pop(0))
    with open(os.environ["FAKE_SRUN_RECORD"], "w") as f:
      json.dump({{"options": options, "command": args}}, f)
    n = int(os.environ["FAKE_SRUN_NTASKS"])
    lock = threading.Lock()
    def label(rank, stream):
      for line in iter(stream.readline, b""):
        with lock:
          sys.stdout.buffer.write(b"%d: %s" % (rank, line))
          sys.stdout.buffer.flush()
    procs, threads = [], []
    for rank in range(n):
      env = dict(os.environ, SLURM_PROCID=str(rank), SLURM_STEP_NUM_TASKS=str(n),
                 SLURM_STEP_NODELIST="localhost", SLURM_STEP_TASKS_PER_NODE=str(n))
      procs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT))
      threads.append(threading.Thread(target=label, args=(rank, procs[-1].stdout)))
      threads[-1].start()
    rc = max((p.wait() for p in procs), default=0)
    for t in threads:
      t.join()
    sys.exit(rc)
    """)


def consecutive_free_ports(n):
  """A base port such that base .. base+n-1 are free (the resolver numbers tasks that way)."""
  for _ in range(50):
    sockets = []
    try:
      first = socket.socket()
      first.bind(("127.0.0.1", 0))
      sockets.append(first)
      base = first.getsockname()[1]
      for offset in range(1, n):
        s = socket.socket()
        s.bind(("127.0.0.1", base + offset))
        sockets.append(s)
      return base
    except OSError:
      continue
    finally:
      for s in sockets:
        s.close()
  raise RuntimeError("no consecutive free ports")


def run_sbatch(tmp_path, *args, ntasks=2):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  srun = bin_dir / "srun"
  srun.write_text(FAKE_SRUN.format(python=sys.executable))
  srun.chmod(0o755)
  record = tmp_path / "srun.json"
  env = dict(os.environ)
  env.update(
      PATH=f"{bin_dir}{os.pathsep}{env['PATH']}",
      PYTHON=sys.executable,
      PYTHONPATH=os.pathsep.join(p for p in (TESTS, env.get("PYTHONPATH")) if p),
      VAE_DIST_MAIN_MODULE="mw_allreduce_worker",
      VAE_DIST_SLURM_PORT_BASE=str(consecutive_free_ports(2)),
      VAE_DIST_DIR=REPO,
      FAKE_SRUN_NTASKS=str(ntasks),
      FAKE_SRUN_RECORD=str(record),
      TF_CPP_MIN_LOG_LEVEL="1",
  )
  proc = subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, timeout=60,
                        env=env)
  return proc, json.loads(record.read_text()) if record.exists() else None


def test_sbatch_runs_one_task_per_node_with_slurm_cluster_resolver(tmp_path):
  hostile = "--config.name=a b; $(x) \"q\"\n`y`"
  proc, srun = run_sbatch(tmp_path, "--config=configs/default.py:smoke",
                          f"--workdir={tmp_path / 'w'}", hostile)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert "--ntasks-per-node=1" in srun["options"]
  assert "--kill-on-bad-exit=1" in srun["options"]
  assert srun["command"][:3] == [sys.executable, "-m", "mw_allreduce_worker"]

  results = {int(rank): json.loads(result) for rank, result in
             re.findall(r"^(\d+): RESULT (.*)$", proc.stdout, re.M)}
  assert sorted(results) == [0, 1]
  for rank, r in results.items():
    assert r["task_id"] == rank  # Slurm's rank is TensorFlow's task index.
    assert r["total"] == r["expected"] == 3.0
    # Verbatim, with the strategy appended after --config (ml_collections needs that order).
    assert r["extra_args"] == ["--config=configs/default.py:smoke", f"--workdir={tmp_path / 'w'}",
                               hostile, "--config.strategy=multi_worker_mirrored"]


def test_sbatch_keeps_a_strategy_chosen_by_the_caller(tmp_path):
  # Only the command line matters here: the fake srun starts no task.
  proc, srun = run_sbatch(tmp_path, "--config=c.py", "--config.strategy=mirrored", "x y",
                          ntasks=0)
  assert proc.returncode == 0, proc.stderr
  assert srun["command"][3:] == ["--config=c.py", "--config.strategy=mirrored", "x y"]

r"""Runs N TensorFlow workers, each with its own TF_CONFIG, and supervises them.

Usage:
  # N workers on this machine (free loopback ports), running the training program:
  python launch/multiworker.py --num_workers=2 --config=configs/mnist.py:smoke \
      --workdir=/tmp/runs/mw [--config.FIELD=VALUE ...] [-- MORE_TRAINING_FLAGS ...]

  # Any other command: everything after `--` that does not start with a dash.
  python launch/multiworker.py --num_workers=2 -- python my_program.py --flag

  # One host of a cluster: the same --hosts everywhere, this host's index in --task_index.
  python launch/multiworker.py --hosts=h1:2222,h2:2222 --task_index=0 --config=... --workdir=...

The default worker command is `python -m vae_dist.main --config=... --workdir=...` followed by
the pass-through flags, verbatim (`--config.FIELD=...` anywhere, and anything after `--`), and
`--config.strategy=multi_worker_mirrored` unless they set the strategy. Every worker gets the
same arguments: the workdir is shared (TensorFlow's multi-worker checkpointing writes the chief's
copy there).

Each worker's output is streamed line by line with a `[worker i] ` prefix. As soon as one
worker fails, the others get SIGTERM and, after --grace_period_seconds, SIGKILL (their whole
process groups), and the launcher exits with the failed worker's status: a crashed worker never
leaves its peers hanging in a collective. The launcher exits 0 when every worker exits 0. Workers
that saved and stopped on a preemption notice (exit status 143) are started again, up to
--max_restarts times, and resume from their checkpoints.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Sequence, TextIO, Tuple

from absl import app
from absl import flags

try:
  from launch import cli_args  # Imported as a package (tests, python -m launch.NAME).
except ImportError:
  import cli_args  # Run as a script: launch/ itself is sys.path[0].

# The launcher's flags live apart from absl's global FLAGS, so that importing this module next to
# the training program (or the other launchers) never clashes over names like --config.
FLAGS = flags.FlagValues()


def _flag(define, name, default, help_text, **kwargs):
  return define(name, default, help=help_text, flag_values=FLAGS, **kwargs)


_MAX_RESTARTS = _flag(
    flags.DEFINE_integer, "max_restarts", 3,
    "Times the workers are started again after they saved and stopped on a preemption notice "
    "(exit status 143).")
_NUM_WORKERS = _flag(flags.DEFINE_integer, "num_workers", 2,
                     "Workers to start on this machine (unused with --hosts).")
_HOSTS = _flag(
    flags.DEFINE_list, "hosts", [],
    "host:port of every worker, in task order. Without it the workers run here on free loopback "
    "ports.")
_TASK_INDEX = _flag(
    flags.DEFINE_integer, "task_index", -1,
    "With --hosts: start only this worker (one launcher per host); -1 starts every listed worker "
    "here.")
_CONFIG = _flag(flags.DEFINE_string, "config", None, "Training config, passed as --config.")
_WORKDIR = _flag(flags.DEFINE_string, "workdir", None, "Training workdir, passed as --workdir.")
_PYTHON = _flag(flags.DEFINE_string, "python", sys.executable,
                "Interpreter for the default training command.")
_MODULE = _flag(flags.DEFINE_string, "module", "vae_dist.main",
                "Module run with `python -m` by the default training command.")
_GRACE = _flag(flags.DEFINE_float, "grace_period_seconds", 10.0,
               "Between SIGTERM and SIGKILL when workers are stopped.")
_TIMEOUT = _flag(flags.DEFINE_float, "timeout_seconds", 0.0,
                 "Stop every worker and fail after this long (0: no limit).")
_LOG_DIR = _flag(flags.DEFINE_string, "worker_log_dir", "",
                 "Also write worker i's output to <worker_log_dir>/worker_<i>.log.")

EXIT_TIMEOUT = 124
# What vae_dist.main exits with after saving on a preemption notice (vae_dist/train/preemption.py).
RESTARTABLE_EXIT_CODE = 143


class LaunchError(Exception):
  """Bad arguments; the message says what to do."""


def free_ports(n: int, host: str = "127.0.0.1") -> List[int]:
  """n distinct ports that were free a moment ago.

  All sockets stay open until every port is chosen, so the kernel cannot hand out one port
  twice; they are closed before returning because the workers bind the ports themselves. Another
  process could take one in between; that race is accepted (a worker would fail to bind, and the
  launcher stops the rest).
  """
  sockets = []
  try:
    for _ in range(n):
      s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
      s.bind((host, 0))
      sockets.append(s)
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def _is_this_host(host: str) -> bool:
  if host in ("localhost", "127.0.0.1", "::1", "0.0.0.0", socket.gethostname(),
              socket.getfqdn()):
    return True
  try:
    return socket.gethostbyname(host).startswith("127.")
  except OSError:
    return False


def check_ports_free(cluster: Sequence[str], indices: Sequence[int]) -> None:
  """Refuses at once a port of a worker started here that another process already holds.

  Without this the worker's server fails to start and its peers wait for it until the cluster
  timeout, blaming it rather than the port.

  Raises:
    LaunchError: naming the port and the worker.
  """
  for i in indices:
    host, port = cluster[i].rsplit(":", 1)
    if not _is_this_host(host):
      continue
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
      try:
        probe.bind(("0.0.0.0", int(port)))  # TensorFlow's server listens on every address.
      except OSError as e:
        raise LaunchError(f"port {port} of worker {i} ({cluster[i]}) cannot be used on this "
                          f"machine: {e.strerror}. Stop the process holding it or choose "
                          "another port in --hosts.") from None


def tf_config(cluster: Sequence[str], index: int) -> str:
  """TF_CONFIG for worker `index` of a cluster of plain workers (worker 0 is the chief)."""
  return json.dumps({"cluster": {"worker": list(cluster)},
                     "task": {"type": "worker", "index": index}})


def worker_command(passthrough: Sequence[str], *, python: str, module: str,
                   config: Optional[str], workdir: Optional[str]) -> List[str]:
  """The command every worker runs.

  Args:
    passthrough: worker arguments from `cli_args.split_passthrough`. If the first one is not a
      flag, they are a complete command and used as is.
    python: interpreter for the training program.
    module: the training program's module.
    config: --config for the training program (None: not passed).
    workdir: --workdir for the training program (None: not passed).

  Returns:
    The argv to run.

  Raises:
    LaunchError: --config/--workdir given together with a custom command.
  """
  if passthrough and not passthrough[0].startswith("-"):
    if config or workdir:
      raise LaunchError("--config and --workdir only apply to the training command; put them "
                        "into your own command after `--`.")
    return list(passthrough)
  argv = [python, "-m", module]
  if config:
    argv.append(f"--config={config}")
  if workdir:
    argv.append(f"--workdir={workdir}")
  argv += passthrough
  # Appended, not prepended: ml_collections rejects a --config.FIELD override that comes before
  # --config, and --config may be among the pass-through flags.
  if not any(a == "--config.strategy" or a.startswith("--config.strategy=") for a in passthrough):
    argv.append("--config.strategy=multi_worker_mirrored")
  return argv


class _Output:
  """Serialises whole prefixed lines from several threads onto one stream."""

  def __init__(self, stream: TextIO):
    self._stream = stream
    self._lock = threading.Lock()

  def write_line(self, line: str) -> None:
    with self._lock:
      self._stream.write(line if line.endswith("\n") else line + "\n")
      self._stream.flush()


def _pump(pipe, prefix: str, out: _Output, log_path: str) -> None:
  log = open(log_path, "a", encoding="utf-8") if log_path else None
  try:
    for raw in iter(pipe.readline, b""):
      line = raw.decode("utf-8", errors="replace")
      out.write_line(prefix + line)
      if log:
        log.write(line)
        log.flush()
  finally:
    pipe.close()
    if log:
      log.close()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
  # Each worker leads its own process group: the signal also reaches whatever it started.
  try:
    os.killpg(proc.pid, sig)
  except (ProcessLookupError, PermissionError):
    pass


def _status(returncode: int) -> int:
  """A shell-style exit status: 128 + N for a worker killed by signal N."""
  return 128 - returncode if returncode < 0 else returncode


def run_workers(workers: Sequence[Tuple[int, List[str], Dict[str, str]]],
                *,
                grace_period: float = 10.0,
                timeout: float = 0.0,
                log_dir: str = "",
                stdout: TextIO = None,
                stderr: TextIO = None,
                poll_interval: float = 0.05,
                report: Optional[dict] = None) -> int:
  """Starts the workers, streams their output, and stops them all when one fails.

  Args:
    workers: (task index, argv, extra environment) per worker to start here.
    grace_period: seconds between SIGTERM and SIGKILL when stopping workers.
    timeout: > 0: stop everything and return 124 after this many seconds.
    log_dir: if set, each worker's output is also written to log_dir/worker_<index>.log.
    stdout: where prefixed worker output goes (default sys.stdout).
    stderr: where the launcher's own messages go (default sys.stderr).
    poll_interval: seconds between checks of the workers.
    report: if given, gets 'launcher_signal' when the launcher itself was signalled (its status
      128 + N can equal a worker's own status, e.g. 143 for SIGTERM).

  Returns:
    0 if every worker exited 0; otherwise the status of the first worker that failed (128 + N
    for signal N), 124 on timeout, or 128 + N if the launcher itself got signal N.
  """
  out = _Output(stdout or sys.stdout)
  err = _Output(stderr or sys.stderr)
  if log_dir:
    os.makedirs(log_dir, exist_ok=True)
  procs: List[Tuple[int, subprocess.Popen]] = []
  pumps: List[threading.Thread] = []

  def stop_all(reason: str) -> None:
    alive = [(i, p) for i, p in procs if p.poll() is None]
    if alive:
      err.write_line(f"[launcher] {reason}: stopping worker(s) "
                     f"{', '.join(str(i) for i, _ in alive)} (SIGTERM)")
    for _, p in procs:
      _signal_group(p, signal.SIGTERM)
    deadline = time.monotonic() + grace_period
    while time.monotonic() < deadline and any(p.poll() is None for _, p in procs):
      time.sleep(poll_interval)
    for i, p in procs:
      if p.poll() is None:
        err.write_line(f"[launcher] worker {i} ignored SIGTERM for {grace_period:g} s: SIGKILL")
      # Also sweeps up anything a worker left behind in its group.
      _signal_group(p, signal.SIGKILL)
    for _, p in procs:
      p.wait()

  received = []  # Signals for the launcher; the loops below check this between polls.

  def on_signal(signum, frame):
    del frame
    received.append(signum)

  previous = {}
  if threading.current_thread() is threading.main_thread():
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
      previous[sig] = signal.signal(sig, on_signal)
  result = 0
  try:
    for index, argv, env in workers:
      if received:
        break
      full_env = dict(os.environ)
      full_env.update(env)
      # Unbuffered Python output keeps the interleaved log in real time.
      full_env.setdefault("PYTHONUNBUFFERED", "1")
      try:
        proc = subprocess.Popen(argv, env=full_env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
      except OSError as e:
        err.write_line(f"[launcher] could not start worker {index}: {e}")
        result = 127
        break
      procs.append((index, proc))
      err.write_line(f"[launcher] worker {index} started, pid {proc.pid}")
      log_path = os.path.join(log_dir, f"worker_{index}.log") if log_dir else ""
      pump = threading.Thread(target=_pump, args=(proc.stdout, f"[worker {index}] ", out, log_path),
                              daemon=True)
      pump.start()
      pumps.append(pump)
    if result:
      stop_all("a worker could not start")
      return result

    deadline = time.monotonic() + timeout if timeout > 0 else None
    pending = dict(procs)
    while pending:
      if received:
        stop_all(f"launcher got signal {received[0]}")
        if report is not None:
          report["launcher_signal"] = received[0]
        return 128 + received[0]
      for index, proc in list(pending.items()):
        rc = proc.poll()
        if rc is None:
          continue
        del pending[index]
        if rc == 0:
          err.write_line(f"[launcher] worker {index} finished")
        else:
          result = _status(rc)
          err.write_line(f"[launcher] worker {index} failed with exit status {result}")
          stop_all(f"worker {index} failed")
          return result
      if deadline is not None and time.monotonic() > deadline:
        stop_all(f"timeout after {timeout:g} s")
        return EXIT_TIMEOUT
      time.sleep(poll_interval)
    # Everyone succeeded; leftovers in the workers' groups would hold the output pipes open.
    for _, p in procs:
      _signal_group(p, signal.SIGKILL)
    return 0
  finally:
    for sig, handler in previous.items():
      signal.signal(sig, handler)
    for pump in pumps:
      pump.join(timeout=5)


def plan_workers(passthrough: Sequence[str]) -> List[Tuple[int, List[str], Dict[str, str]]]:
  """The workers to start here, from the flags."""
  if _HOSTS.value:
    cluster = list(_HOSTS.value)
    for address in cluster:
      if not re.fullmatch(r"[^:\s]+:\d+", address):
        raise LaunchError(f"--hosts entry {address!r} is not host:port.")
    if _TASK_INDEX.value >= len(cluster):
      raise LaunchError(f"--task_index={_TASK_INDEX.value} but --hosts lists {len(cluster)} "
                        "workers.")
    indices = [_TASK_INDEX.value] if _TASK_INDEX.value >= 0 else list(range(len(cluster)))
    check_ports_free(cluster, indices)
  else:
    if _TASK_INDEX.value >= 0:
      raise LaunchError("--task_index needs --hosts (the addresses of every worker).")
    if _NUM_WORKERS.value < 1:
      raise LaunchError("--num_workers must be at least 1.")
    cluster = [f"localhost:{port}" for port in free_ports(_NUM_WORKERS.value)]
    indices = list(range(len(cluster)))
  argv = worker_command(passthrough, python=_PYTHON.value, module=_MODULE.value,
                        config=_CONFIG.value, workdir=_WORKDIR.value)
  return [(i, argv, {"TF_CONFIG": tf_config(cluster, i)}) for i in indices]


_PASSTHROUGH: List[str] = []


def main(argv: Sequence[str]) -> int:
  if len(argv) > 1:
    print(f"multiworker.py: error: unexpected argument {argv[1]!r}; put the worker command or "
          "extra training flags after `--`.", file=sys.stderr)
    return 2
  restarts = 0
  while True:
    try:
      workers = plan_workers(_PASSTHROUGH)  # Fresh ports for every start.
    except LaunchError as e:
      print(f"multiworker.py: error: {e}", file=sys.stderr)
      return 2
    print(f"[launcher] {len(workers)} worker(s): "
          f"{json.loads(workers[0][2]['TF_CONFIG'])['cluster']}; command: {workers[0][1]}",
          file=sys.stderr, flush=True)
    report = {}
    rc = run_workers(workers, grace_period=_GRACE.value, timeout=_TIMEOUT.value,
                     log_dir=_LOG_DIR.value, report=report)
    # 143 from the workers: they saved and stopped on a preemption notice; only a finished run
    # (0), a failure or a signal to the launcher itself ends the launcher.
    if (rc != RESTARTABLE_EXIT_CODE or "launcher_signal" in report or
        restarts >= _MAX_RESTARTS.value):
      return rc
    restarts += 1
    print(f"[launcher] the workers stopped on a preemption notice (status {rc}): start "
          f"{restarts} of {_MAX_RESTARTS.value} more; training resumes from its checkpoints",
          file=sys.stderr, flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=cli_args.flags_parser(FLAGS, __doc__, _PASSTHROUGH))

"""The shell commands the TPU launcher runs on the workers, one string each.

Each is for `gcloud compute tpus tpu-vm ssh --command=STRING`, which the worker's login shell
parses. Training is started, watched and stopped by remote_supervisor.py, whose text travels
inside the command (base64 of its zlib), so the workers need nothing but Python.
"""
import base64
import json
import pathlib
import re
import shlex
import zlib
from typing import Dict, Optional, Sequence, Tuple

# The helper itself also travels base64-encoded: the command stays one line with nothing for a
# shell to interpret but this fixed bootstrap.
_SUPERVISOR = pathlib.Path(__file__).with_name("remote_supervisor.py").read_text("utf-8")
_BOOTSTRAP = ('import base64, zlib; exec(zlib.decompress(base64.b64decode("%s")))' %
              base64.b64encode(zlib.compress(_SUPERVISOR.encode("utf-8"), 9)).decode("ascii"))


def _encode(payload: dict) -> str:
  return base64.b64encode(json.dumps(payload).encode("utf-8")).decode("ascii")


def decode_payload(remote_command: str) -> dict:
  """The payload of a command from `remote_start_command` (for dry-run display and tests)."""
  return json.loads(base64.b64decode(shlex.split(remote_command)[-1]).decode("utf-8"))


def remote_start_command(argv: Sequence[str],
                         env: Optional[Dict[str, str]] = None,
                         cwd: str = "vae_dist",
                         run_dir: str = "vae_dist_run",
                         python: str = "python3") -> str:
  """Shell command that starts `argv` detached on a worker, with its output in a log file.

  The string is meant for a POSIX shell (what `gcloud ... ssh --command=` hands it to). Every
  argument of `argv` and every `env` value arrives byte for byte: they are carried as base64 JSON,
  and only `python` and the fixed bootstrap are shell-quoted words.

  Args:
    argv: the training command, program included.
    env: extra environment variables for it.
    cwd: its working directory; relative paths are relative to the shell's (SSH: home) directory.
    run_dir: directory for train.log, train.pid and train.exit (relative like cwd).
    python: Python interpreter that runs the small supervisor.

  Returns:
    The command string. It prints one line and returns at once; it fails with status 3 when a
    training process started by an earlier call is still running.
  """
  payload = {"argv": list(argv), "env": dict(env or {}), "cwd": cwd, "run_dir": run_dir}
  return shlex.join([python, "-c", _BOOTSTRAP, "start", _encode(payload)])


def remote_status_command(run_dir: str = "vae_dist_run", python: str = "python3") -> str:
  """Shell command printing RUNNING <pid> | EXITED <code> | LOST | NOT_STARTED."""
  return shlex.join([python, "-c", _BOOTSTRAP, "status", _encode({"run_dir": run_dir})])


def remote_stop_command(run_dir: str = "vae_dist_run",
                        python: str = "python3",
                        grace_seconds: float = 30) -> str:
  """Shell command stopping the training process group (SIGTERM, then SIGKILL)."""
  payload = {"run_dir": run_dir, "grace": grace_seconds}
  return shlex.join([python, "-c", _BOOTSTRAP, "stop", _encode(payload)])


def remote_logs_command(run_dir: str = "vae_dist_run") -> str:
  # -F keeps following across restarts of training, which append to the same file.
  return shlex.join(["tail", "-n", "+1", "-F", f"{run_dir}/train.log"])


def parse_status(output: str) -> Tuple[str, Optional[int]]:
  """Parses the output of `remote_status_command`.

  Only the last matching line counts: ssh may print banners or warnings before it.

  Returns:
    ('RUNNING', pid), ('EXITED', code), ('LOST', None), ('NOT_STARTED', None), or
    ('UNKNOWN', None) when no line matches.
  """
  result = ("UNKNOWN", None)
  for line in output.splitlines():
    m = re.fullmatch(r"\s*(RUNNING|EXITED|LOST|NOT_STARTED)(?:\s+(-?\d+))?\s*", line)
    if m:
      result = (m.group(1), int(m.group(2)) if m.group(2) is not None else None)
  return result


def remote_setup_command(*,
                         remote_dir: str,
                         python: str,
                         pip_extra: str,
                         find_links: str,
                         tarball: str = "",
                         git_url: str = "",
                         git_ref: str = "") -> str:
  """One-line shell command that (re)creates remote_dir from the tarball or git and installs it."""
  steps = [["rm", "-rf", remote_dir]]
  if git_url:
    steps.append(["git", "clone", "--quiet", git_url, remote_dir])
    if git_ref:
      steps.append(["git", "-C", remote_dir, "checkout", "--quiet", git_ref])
  else:
    steps.append(["mkdir", "-p", remote_dir])
    steps.append(["tar", "-xzf", tarball, "-C", remote_dir])
  steps.append(["cd", remote_dir])
  if "tpu" in pip_extra.split(","):
    # One TensorFlow build per host: a TensorFlow image's own `tensorflow` next to tensorflow-tpu
    # would share its import path (pip says nothing when neither is installed, as on base images).
    steps.append([python, "-m", "pip", "uninstall", "--quiet", "--yes", "tensorflow",
                  "tensorflow-cpu", "tf-nightly"])
  # VAE_DIST_TF_PROVIDED=1: setup.py must not add the `tensorflow` distribution next to
  # tensorflow-tpu (from the extra) or next to the image's own TensorFlow.
  pip = ["env", "VAE_DIST_TF_PROVIDED=1", python, "-m", "pip", "install", "--quiet", "-e",
         f".[{pip_extra}]" if pip_extra else "."]
  if find_links:
    pip += ["-f", find_links]
  steps.append(pip)
  return " && ".join(shlex.join(s) for s in steps)

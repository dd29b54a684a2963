"""What the fault tests share: running a tool's real command line, and what "unchanged" means."""
import hashlib
import os
import shutil
import subprocess
import sys

import cli


def run_tool(module, *args, timeout=240):
  """`python -m vae_dist.<module> ARGS` to its end; the CompletedProcess (text)."""
  return subprocess.run([sys.executable, "-m", f"vae_dist.{module}", *args], cwd=cli.ROOT,
                        env=cli.env(), capture_output=True, text=True, timeout=timeout)


def one_error(proc):
  """The one `error:` line of a failed command, which must have no traceback."""
  assert proc.returncode != 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(lines) == 1, proc.stderr[-3000:]
  return lines[0]


def files(directory, skip=("lock",)):
  """Every file under `directory` (relative path -> SHA-256), the lock's record left out."""
  found = {}
  for parent, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(parent, name)
      relative = os.path.relpath(path, directory)
      if relative in skip:
        continue
      with open(path, "rb") as f:
        found[relative] = hashlib.sha256(f.read()).hexdigest()
  return found


def copy_run(source, target):
  """A private copy of a trained workdir that a test may damage or resume."""
  shutil.copytree(source, target)
  return str(target)


def steps(workdir):
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())

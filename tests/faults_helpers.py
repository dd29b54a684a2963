"""What the fault tests share: running a tool's real command line, and what "unchanged" means."""
import hashlib
import os
import shutil
import subprocess
import sys

import cli
from cli import one_error  # noqa: F401  # pylint: disable=unused-import


def run_tool(module, *args, timeout=240):
  """`python -m vae_dist.<module> ARGS` to its end; the CompletedProcess (text)."""
  return subprocess.run([sys.executable, "-m", f"vae_dist.{module}", *args], cwd=cli.ROOT,
                        env=cli.env(), capture_output=True, text=True, timeout=timeout)


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

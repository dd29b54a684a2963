"""What ran: code version (git commit and whether the tree was dirty), library versions, host.

Recorded at every start of a run, where it never counts as a config change on resume
(config.json holds the config alone, see config_changes.py):

  <workdir>/run_info.json        one entry per start (the earlier starts' entries are kept);
  <workdir>/model_summary.txt    Keras' summary of the model, with its parameter count;
  each checkpoint's metadata      under "run" (train.py).

The log gets one line with the parameter count and where the summary is.
"""
import datetime
import json
import os
import platform
import socket
import subprocess
import sys

from absl import logging
import tensorflow as tf

import vae_dist
from vae_dist import fileio
from vae_dist import run_files



def git_state(folder: str) -> dict:
  """{'git_commit': sha, 'git_dirty': bool} of the checkout holding `folder`, or {} outside one."""
  def git(*args):
    return subprocess.run(["git", "-C", folder, *args], capture_output=True, text=True,
                          timeout=10, check=True).stdout.strip()
  try:
    commit = git("rev-parse", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
  except (OSError, subprocess.SubprocessError):
    return {}  # Not a checkout (an installed wheel), or no git: nothing to say.
  return {"git_commit": commit, "git_dirty": dirty}


def command_line() -> list:
  """This process's command as a user can type it again.

  Under `python -m vae_dist.main` Python puts the module's file in argv[0]
  (/.../vae_dist/main.py), which does not run as written; it is given back as `python -m`.
  """
  argv = list(sys.argv)
  if not argv:
    return argv
  script = os.path.abspath(argv[0])
  package = os.path.dirname(os.path.abspath(vae_dist.__file__))
  if script.startswith(package + os.sep) and script.endswith(".py"):
    module = os.path.relpath(script[:-3], os.path.dirname(package)).replace(os.sep, ".")
    return ["python", "-m", module, *argv[1:]]
  return argv


def collect() -> dict:
  """This process's versions, host and command line."""
  package = os.path.dirname(os.path.abspath(vae_dist.__file__))
  info = {
      "vae_dist_version": vae_dist.__version__,
      "vae_dist_path": package,
      "tensorflow_version": tf.__version__,
      "keras_version": getattr(tf.keras, "__version__", None) or tf.keras.version(),
      "python_version": platform.python_version(),
      "host": socket.gethostname(),
      "command": command_line(),
      "started": datetime.datetime.now(datetime.timezone.utc).isoformat(),
  }
  info.update(git_state(package))
  return info


def parameter_count(model) -> int:
  return int(sum(int(tf.size(v)) for v in model.trainable_variables))


def model_summary(model) -> str:
  lines = []
  try:
    model.summary(print_fn=lambda line, **_: lines.append(line))
  except ValueError:  # A model Keras cannot summarise before it is called: the count only.
    pass
  lines.append(f"Trainable parameters: {parameter_count(model):,}")
  return "\n".join(lines) + "\n"


def record(workdir: str, model, *, write: bool) -> dict:
  """Logs the parameter count; on the chief (`write`), writes the run info and model summary.

  Returns:
    The run info, for the checkpoints' metadata.
  """
  info = collect()
  info["trainable_parameters"] = parameter_count(model)
  commit = info.get("git_commit")
  code = f"git {commit[:12]}{' (dirty tree)' if info.get('git_dirty') else ''}" if commit else (
      f"vae_dist {info['vae_dist_version']}")
  logging.info("Model: %s trainable parameters (summary in %s); code: %s; TensorFlow %s, "
               "Keras %s on %s.", f"{info['trainable_parameters']:,}",
               run_files.RunDir(workdir).model_summary, code, info["tensorflow_version"],
               info["keras_version"], info["host"])
  if write:
    fileio.write_text_atomic(run_files.RunDir(workdir).model_summary, model_summary(model))
    path = run_files.RunDir(workdir).run_info
    starts = []
    if tf.io.gfile.exists(path):
      try:
        with tf.io.gfile.GFile(path) as f:
          starts = json.load(f).get("starts", [])
      except (tf.errors.OpError, ValueError, AttributeError):
        # Unreadable: keep it under another name rather than overwrite what it held.
        tf.io.gfile.rename(path, path + ".unreadable", overwrite=True)
        starts = []
    starts.append(info)
    fileio.write_text_atomic(path, json.dumps({"starts": starts}, indent=2, sort_keys=True))
  return info

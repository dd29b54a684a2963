"""A quiet console by default: vae_dist's own lines and real warnings, not TensorFlow's chatter.

Two sources of noise, two filters:

  * TensorFlow's C++ runtime writes straight to file descriptor 2: the oneDNN, cudart and CPU
    feature banners (twice: two of TF's shared libraries log before absl::InitializeLog, which
    TF_CPP_MIN_LOG_LEVEL cannot silence), and `failed call to cuInit ... UNKNOWN ERROR (303)` on
    every host without a GPU. quiet_native_stderr() sets TF_CPP_MIN_LOG_LEVEL=2 (C++ INFO and
    WARNING lines after start-up) and puts a small filter process between fd 2 and the terminal
    that drops exactly those start-up lines. It is a separate process so that nothing is lost
    when this one aborts (a failed check in a kernel prints its reason and dies): the filter
    reads the pipe to its end.
  * TFDS and TensorFlow's Python INFO lines (reader.py, dataset_info.py, ...) go through absl's
    handler like vae_dist's own; quiet_python_logging() drops INFO records that do not come from
    vae_dist or its launchers. WARNING and above always pass.

Both stay off when the user asked for the rest: --verbosity/-v on the command line, or
TF_CPP_MIN_LOG_LEVEL already in the environment (never overridden). Only vae_dist's commands
(python -m vae_dist.<command>, the vae-dist-* console scripts) are filtered, never a program
that merely imports vae_dist. This module must not import TensorFlow.
"""
import atexit
import logging as std_logging
import os
import subprocess
import sys

COMMANDS = ("main", "generate", "evaluate", "export", "concepts")

# The C++ lines the filter drops: absl's pre-initialisation notice, INFO/WARNING lines of a .cc
# file (I1202 16:26:10.231632 1111 port.cc:153] ...), the second line of the CPU feature banner,
# and the cuInit failure of a host without a GPU driver.
_FILTER_PROGRAM = r"""
import os, re, sys
drop = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|[IW]\d{4} [\d:.]+ +\d+ [\w.]+\.(cc|h):\d+\]"
    rb"|To enable the following instructions: .* rebuild TensorFlow with"
    rb"|E\d{4} [\d:.]+ +\d+ cuda_platform\.cc:\d+\] failed call to cuInit)")
out = sys.stdout.fileno()
pending = b""
while True:
  chunk = os.read(0, 65536)
  if not chunk:
    break
  pending += chunk
  *lines, pending = pending.split(b"\n")
  kept = b"".join(line + b"\n" for line in lines if not drop.match(line))
  if b"\r" in pending:  # A progress bar redrawing its line: show it now, not at the next \n.
    head, _, pending = pending.rpartition(b"\r")
    kept += head + b"\r"
  if kept:
    os.write(out, kept)
if pending and not drop.match(pending):
  os.write(out, pending)
"""

# Set once by quiet_native_stderr(): whether fd 2 was a terminal before the filter replaced it.
stderr_was_tty = None


def is_command(argv=None, orig_argv=None) -> bool:
  """Whether this process is one of vae_dist's commands (not a program importing vae_dist)."""
  argv = sys.argv if argv is None else argv
  orig_argv = getattr(sys, "orig_argv", []) if orig_argv is None else orig_argv
  if argv and os.path.basename(argv[0]).startswith("vae-dist-"):
    return True
  for i, arg in enumerate(orig_argv[:-1]):
    if arg == "-m":
      return orig_argv[i + 1] in tuple(f"vae_dist.{c}" for c in COMMANDS)
  return False


def wants_verbose(argv) -> bool:
  """Whether --verbosity (or absl's short -v) is on the command line, whatever its value."""
  return any(a.startswith(("--verbosity", "-v=")) or a == "-v" for a in argv[1:])


def quiet_native_stderr(environ=None, argv=None) -> bool:
  """Filters TensorFlow's C++ start-up lines out of fd 2 for this process and its children.

  Returns:
    Whether the filter was installed.
  """
  global stderr_was_tty
  environ = os.environ if environ is None else environ
  argv = sys.argv if argv is None else argv
  try:
    stderr_was_tty = os.isatty(2)
  except OSError:
    stderr_was_tty = False
  if (not is_command(argv) or "TF_CPP_MIN_LOG_LEVEL" in environ or wants_verbose(argv) or
      "tensorflow" in sys.modules):
    return False
  environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
  try:
    sys.stderr.flush()
    original = os.dup(2)
    # A session of its own: Ctrl-C and a launcher's SIGTERM to the process group must not end
    # the filter before the command has said its last line.
    proc = subprocess.Popen([sys.executable, "-S", "-E", "-c", _FILTER_PROGRAM],
                            stdin=subprocess.PIPE, stdout=original, start_new_session=True)
    os.dup2(proc.stdin.fileno(), 2)
    proc.stdin.close()
    os.close(original)
  except OSError:
    return False  # No filter is better than no command.
  atexit.register(_drain, proc)
  return True


def _drain(proc) -> None:
  """At exit, lets the filter write our last lines before the shell prints its prompt."""
  try:
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # Our end of the pipe closes; the filter reads to its end and exits.
    os.close(devnull)
    proc.wait(timeout=2)  # Longer only if a child of ours still holds the pipe.
  except (OSError, ValueError, subprocess.TimeoutExpired):
    pass


class _OwnInfoOnly(std_logging.Filter):
  """Passes WARNING and above, and INFO from vae_dist's own files (the package, launch/)."""

  def __init__(self):
    super().__init__()
    package = os.path.dirname(os.path.abspath(__file__))
    self._roots = (package + os.sep, os.path.join(os.path.dirname(package), "launch") + os.sep)

  def filter(self, record):
    return (record.levelno >= std_logging.WARNING or
            os.path.abspath(record.pathname).startswith(self._roots))


def quiet_python_logging(verbosity_present: bool) -> None:
  """Drops other libraries' INFO lines from absl's handler unless --verbosity was given."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  if verbosity_present:
    return
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _OwnInfoOnly) for f in handler.filters):
    handler.addFilter(_OwnInfoOnly())

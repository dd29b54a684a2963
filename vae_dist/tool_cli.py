"""What the command lines of the tools share: flags, flag parsing and error handling.

Like `vae_dist.main`: a user's mistake (VaeDistError, a bad flag) is one `error: ...` line on
stderr and a non-zero exit, without a traceback; anything else is a bug and keeps its traceback.

Flags are defined when a tool runs as a program (`define_common_flags` from its `__main__`), not
at import: generate, evaluate and export share flag names (--workdir, --step, ...) and can then
be imported together, e.g. by tests.
"""
import math
import sys

from absl import app
from absl import flags
from absl import logging

from vae_dist.errors import VaeDistError

FLAGS = flags.FLAGS


def define_common_flags() -> None:
  """--workdir, --step, --data_dir and --manual_dir."""
  flags.DEFINE_string("workdir", None, "The training run's workdir (holds config.json and "
                      "checkpoints/).")
  flags.DEFINE_integer("step", None, "Checkpoint step to use; default: the latest committed one.")
  flags.DEFINE_string(
      "data_dir", None, "TFDS data dir to read the data set from, when it is no longer where "
      "the run's config.json says (config.data_dir).")
  flags.DEFINE_string(
      "manual_dir", None, "Folder of hand-downloaded archives or IDX files, when not the run's "
      "config.manual_dir.")


def data_overrides() -> dict:
  """Config fields the data flags replace (only those given)."""
  return {"data_dir": FLAGS.data_dir, "manual_dir": FLAGS.manual_dir}


def parse_list(text: str, kind, flag: str) -> list:
  """'1,2, 3' -> [1, 2, 3] with `kind` (int or float).

  Raises:
    UsageError: an item is not a `kind`.
  """
  try:
    return [kind(item) for item in text.split(",") if item.strip()]
  except ValueError:
    raise UsageError(f"--{flag}={text!r} is not a comma-separated list of "
                     f"{kind.__name__}s.") from None


class UsageError(VaeDistError):
  """A flag value that is wrong for this run (e.g. an index beyond the split)."""


# The largest seed the tools accept: TF's stateless ops take int64, NumPy's take < 2**32; one
# range for every tool and for config.seed.
MAX_SEED = 2**32 - 1


def check_range(flag: str, value, low=None, high=None, *, allow=(), why: str = "") -> None:
  """Refuses a flag value outside [low, high] (or not finite), before any work is done.

  Args:
    flag: the flag's name without dashes.
    value: its value (int or float).
    low, high: inclusive bounds; None for no bound.
    allow: values accepted whatever the bounds (e.g. -1 for "all").
    why: what the bound protects, appended to the message.

  Raises:
    UsageError: naming the flag, the value and the range.
  """
  if value in allow:
    return
  bad = isinstance(value, float) and not math.isfinite(value)
  bad = bad or (low is not None and value < low) or (high is not None and value > high)
  if bad:
    if low is not None and high is not None:
      span = f"from {low} to {high}"
    elif low is not None:
      span = f"at least {low}"
    else:
      span = f"at most {high}"
    extra = f" (or {', '.join(map(str, allow))})" if allow else ""
    raise UsageError(f"--{flag} must be {span}{extra}, got {value}{'; ' + why if why else ''}.")


def check_common_flags() -> None:
  """--step: a checkpoint step is never negative."""
  if FLAGS.step is not None:
    check_range("step", FLAGS.step, 0)


def _parse_flags(argv):
  try:
    return FLAGS(argv)
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def run(main, required=("workdir",)) -> None:
  """Runs `main(argv)` as an absl app; VaeDistError becomes `error: <message>`, exit status 1."""
  def guarded(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    try:
      main(argv)
    except VaeDistError as e:
      logging.error("%s", e)
      print(f"error: {e}", file=sys.stderr, flush=True)
      sys.exit(1)
    except Exception as e:  # pylint: disable=broad-except
      import tensorflow as tf  # pylint: disable=g-import-not-at-top  # Loaded by every tool.
      if not isinstance(e, tf.errors.DataLossError):
        raise  # A bug: keep the traceback.
      # A damaged shard of the prepared data set (TF's message names no file).
      from vae_dist.data.sources import damage  # pylint: disable=g-import-not-at-top
      print(f"error: {damage.describe_without_builder(e)}", file=sys.stderr, flush=True)
      sys.exit(1)

  flags.mark_flags_as_required(list(required))
  app.run(guarded, flags_parser=_parse_flags)

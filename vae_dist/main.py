"""Trains a VAE: python -m vae_dist.main --config=configs/<name>.py[:arg] [--workdir=DIR].

Flags are read here and nowhere else; the whole config is passed down as one ConfigDict.
"""
import os
import re
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/mnist.py or configs/cartoon.py:smoke.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Where checkpoints, logs and TensorBoard events go (local or gs://). "
    "Default: runs/<config.name>.")
_TPU = flags.DEFINE_string("tpu", None, "TPU name or grpc:// address (sets config.tpu).")
_ACCEPT = flags.DEFINE_bool(
    "accept_config_changes", False, "Resume a workdir even though the config changes what its "
    "run trains (data, model, objective, optimiser, batch, seed...); the changes are recorded in "
    "<workdir>/config_history.jsonl. Without it such a resume is refused.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  # Imported here so `--help` and flag errors do not wait for TensorFlow.
  from vae_dist import errors
  from vae_dist.train import loop

  config = _CONFIG.value
  if _TPU.value is not None:
    config.tpu = _TPU.value
  workdir = _WORKDIR.value
  if workdir is None:
    workdir = os.path.join("runs", config.name)
  elif not workdir.strip():
    # Most often an unset shell variable (--workdir=$RUN): never guess a place for it.
    print("error: --workdir is empty; give the run's directory (or leave the flag out for "
          f"runs/{config.name}).", file=sys.stderr, flush=True)
    sys.exit(1)
  try:
    loop.train_and_evaluate(config, workdir, accept_config_changes=_ACCEPT.value)
  except errors.RunPreempted:
    from vae_dist.train import preemption  # pylint: disable=g-import-not-at-top
    sys.exit(preemption.RESTARTABLE_EXIT_CODE)  # Saved; launchers start it again.
  except errors.VaeDistError as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)
  except Exception as e:  # pylint: disable=broad-except
    message = errors.describe_storage_failure(e)
    if message is None:
      raise  # A bug: keep the traceback.
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def _config_file(argv):
  """The file part of --config=FILE[:ARG] in argv, or None."""
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      value = arg[len("--config="):]
    elif arg == "--config" and i + 1 < len(argv):
      value = argv[i + 1]
    else:
      continue
    return value.split(":", 1)[0]
  return None


def _config_file_error(error, config_file):
  """One line for a config file that is missing, does not parse, or whose get_config raises.

  None when `error` did not come from loading the config file (then it is an override's).
  """
  from vae_dist import errors  # pylint: disable=g-import-not-at-top  # Light: no TensorFlow.
  if isinstance(error, errors.VaeDistError):
    return str(error)  # Our own checks inside get_config (an unknown config argument, ...).
  if config_file is None:
    return None
  if isinstance(error, SyntaxError):
    return (f"--config={config_file}: the config file does not parse: {error.msg} at line "
            f"{error.lineno}.")
  real = os.path.realpath(config_file)
  tb = error.__traceback__
  while tb is not None:
    if os.path.realpath(tb.tb_frame.f_code.co_filename) == real:
      return (f"--config={config_file}: loading it raised {type(error).__name__}: "
              f"{errors.first_line(error)} (line {tb.tb_lineno}).")
    tb = tb.tb_next
  return None


def _parse_flags(argv):
  """absl's parser, with errors of the config file and of --config.* overrides made readable."""
  config_file = _config_file(argv)
  if config_file and not os.path.isfile(config_file):
    # ml_collections would only say so at the first use of the config, with a traceback.
    what = "is a directory" if os.path.isdir(config_file) else "does not exist"
    print(f"error: --config={config_file}: the config file {what} (give a file such as "
          "configs/mnist.py).", file=sys.stderr)
    sys.exit(2)
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    text = str(e)
    if "Error whilst parsing config file" in text:
      # ml_collections wraps get_config's exception with its traceback; keep its last line.
      last = [line for line in text.splitlines() if line.strip()][-1]
      kind, _, message = last.partition(": ")
      if kind.endswith("ConfigArgumentError"):
        text = message
      else:
        text = (f"--config={config_file}: loading it raised {kind.rsplit('.', 1)[-1]}: "
                f"{message}")
    print(f"error: {text}", file=sys.stderr)
    sys.exit(2)
  except Exception as e:  # pylint: disable=broad-except
    message = _config_file_error(e, config_file)
    if message is not None:
      print(f"error: {message}", file=sys.stderr)
      sys.exit(2)
    if not isinstance(e, (AttributeError, KeyError, TypeError, ValueError)):
      raise
    _override_error(e)


def _override_error(e):
  """Prints ml_collections' error for a bad --config.* override as one line and exits."""
  # ml_collections raises these for an override of a field the config does not have.
  text = str(e).replace("\\n", " ").replace("\\'", "'")
  hint = re.search(r'Did you mean "([^"]+)" instead of "([^"]+)"', text)
  if hint:
    text = f"the config has no field '{hint.group(2)}'; did you mean '{hint.group(1)}'?"
  print(f"error: bad --config override: {' '.join(text.split())}", file=sys.stderr)
  sys.exit(2)


def run():
  flags.mark_flags_as_required(["config"])
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()

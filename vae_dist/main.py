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
  from vae_dist import train

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
    train.train_and_evaluate(config, workdir, accept_config_changes=_ACCEPT.value)
  except errors.VaeDistError as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)
  except Exception as e:  # pylint: disable=broad-except
    message = errors.describe_storage_failure(e)
    if message is None:
      raise  # A bug: keep the traceback.
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def _parse_flags(argv):
  """absl's parser, with ml_collections' errors for bad --config.* overrides made readable."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
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

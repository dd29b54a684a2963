"""Trains a VAE: python -m vae_dist.main --config=configs/<name>.py[:arg] [--workdir=DIR].

Flags are read here and nowhere else; the whole config is passed down as one ConfigDict.
"""
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/mnist.py or configs/cartoon.py:smoke.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Where checkpoints, logs and TensorBoard events go (local or gs://). "
    "Default: runs/<config.name>.")
_TPU = flags.DEFINE_string("tpu", None, "TPU name or grpc:// address (sets config.tpu).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  # Imported here so `--help` and flag errors do not wait for TensorFlow.
  from vae_dist import errors
  from vae_dist import train

  config = _CONFIG.value
  if _TPU.value is not None:
    config.tpu = _TPU.value
  workdir = _WORKDIR.value or os.path.join("runs", config.name)
  try:
    train.train_and_evaluate(config, workdir)
  except errors.VaeDistError as e:
    logging.error("%s", e)
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)


def run():
  flags.mark_flags_as_required(["config"])
  app.run(main)


if __name__ == "__main__":
  run()

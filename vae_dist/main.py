"""Trains a VAE, and evaluates and checkpoints it as it goes; resumes the run in --workdir.

  vae-dist-train --config=fashion_mnist:quick                # a config shipped in the package
  python -m vae_dist.main --config=configs/mnist.py:smoke --workdir=runs/try
  python -m vae_dist.main --config=mnist --config.learning_rate=3e-4 --print_config

--config names a config file (FILE.py[:ARG]) or a shipped config (listed at the end; ARG such as
smoke or quick); any field can be overridden with --config.FIELD=VALUE.
Ctrl-C or SIGTERM saves a checkpoint at the next host-loop boundary and stops (exit status 143);
the same command resumes.
"""
# Flags are read here and nowhere else; the whole config is passed down as one ConfigDict.
import os

from absl import flags
from ml_collections import config_flags

from vae_dist import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file or shipped config name, e.g. mnist, fashion_mnist:smoke or "
    "configs/cartoon.py:smoke.", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Where checkpoints, logs and TensorBoard events go (local or gs://). "
    "Default: runs/<config.name>.")
_TPU = flags.DEFINE_string("tpu", None, "TPU name or grpc:// address (sets config.tpu).")
_ACCEPT = flags.DEFINE_bool(
    "accept_config_changes", False, "Resume a workdir even though the config changes what its "
    "run trains (data, model, objective, optimiser, batch, seed...); the changes are recorded in "
    "<workdir>/config_history.jsonl. Without it such a resume is refused.")
_PRINT_CONFIG = flags.DEFINE_bool(
    "print_config", False, "Print every config field with its value (after --config.* "
    "overrides, checked, steps_per_loop=0 resolved to the loop length it follows) and exit.")
_DRY_RUN = flags.DEFINE_bool(
    "dry_run", False, "Check the config, the devices and strategy, the data set and the batch "
    "per replica, print them and exit without training or writing into the workdir.")

HELP_EXTRA = """
Config fields: --print_config lists every field of the chosen config with its value, e.g.
  python -m vae_dist.main --config=mnist:smoke --print_config
--dry_run checks devices, data and batch without training."""


def main(argv):
  del argv
  # Imported here so `--help` and flag errors do not wait for TensorFlow.
  config = _CONFIG.value
  if _TPU.value is not None:
    config.tpu = _TPU.value
  if _PRINT_CONFIG.value:
    from vae_dist.config import checks  # pylint: disable=g-import-not-at-top
    checks.validate(config)  # A bad value is its one error line; steps_per_loop=0 resolved.
    print(config, end="", flush=True)
    return
  workdir = _WORKDIR.value
  if workdir is None:
    workdir = os.path.join("runs", config.name)
  elif not workdir.strip():
    # Most often an unset shell variable (--workdir=$RUN): never guess a place for it.
    raise cli.UsageError("--workdir is empty; give the run's directory (or leave the flag out "
                         f"for runs/{config.name}).")
  if _DRY_RUN.value:
    from vae_dist import dry_run  # pylint: disable=g-import-not-at-top
    dry_run.check(config, workdir)
    return
  from vae_dist.train import loop  # pylint: disable=g-import-not-at-top
  loop.train_and_evaluate(config, workdir, accept_config_changes=_ACCEPT.value)


def run():
  """The vae-dist-train console script."""
  shipped = f"\nShipped configs: {', '.join(cli.config_names())}."
  cli.run(main, required=("config",), description=__doc__, help_extra=HELP_EXTRA + shipped)


if __name__ == "__main__":
  run()

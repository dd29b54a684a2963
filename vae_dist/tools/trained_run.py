"""A finished (or running) training run, read back from its workdir: config, checkpoints, weights.

The tools that use what was trained (generate, evaluate, export) all start here:

  run = trained_run.load(workdir, step=None)   # latest committed checkpoint
  run.config, run.step, run.model              # model holds that step's weights

A workdir holds `config.json` (the resolved config the run trained with) and
`checkpoints/<step>/state/ckpt*` written from tf.train.Checkpoint(model=..., optimizer=...,
step=...). Only the model is restored (a weights-only, partial read), so the tools never build an
optimizer. Nothing in the workdir is written or cleaned here: a run may still be training.
"""
import dataclasses
import json
import os
from typing import Optional

from absl import logging
import ml_collections
import tensorflow as tf

from vae_dist import checkpointing
from vae_dist.config import checks
from vae_dist.config import defaults
from vae_dist.errors import ConfigError
from vae_dist.errors import DamagedCheckpointError
from vae_dist.errors import WorkdirError
from vae_dist.model import networks
from vae_dist import run_files
from vae_dist.train import state as train_state



class RunNotFoundError(WorkdirError):
  """The workdir does not exist or holds no config.json."""


class NoCheckpointError(WorkdirError):
  """The workdir has no committed checkpoint (or not the step asked for)."""


def checkpoints_dir(workdir: str) -> str:
  """The run's checkpoint root."""
  return run_files.RunDir(workdir).checkpoints


def load_config(workdir: str, overrides: Optional[dict] = None) -> ml_collections.ConfigDict:
  """The config a run trained with, from `<workdir>/config.json`.

  Fields the JSON does not have (a run from an older version) keep the defaults of
  defaults.base_config(), so the tools always see a complete config.

  Args:
    workdir: the run's workdir (local or gs://).
    overrides: top-level fields to replace, e.g. {'data_dir': ...} when the data has moved;
      None values are ignored.

  Returns:
    An unlocked ConfigDict.

  Raises:
    RunNotFoundError: no such workdir, or no readable config.json in it.
  """
  if not workdir or not workdir.strip():
    raise RunNotFoundError("No workdir given: pass --workdir=DIR, the directory a training run "
                           "wrote (it holds config.json and checkpoints/).")
  if not tf.io.gfile.isdir(workdir):
    raise RunNotFoundError(f"Workdir {workdir} does not exist.")
  run_files.check_kinds(workdir)
  path = run_files.RunDir(workdir).config
  try:
    with tf.io.gfile.GFile(path, "r") as f:
      values = json.loads(f.read())
  except tf.errors.NotFoundError:
    raise RunNotFoundError(
        f"{workdir} is not a training run's workdir: it has no {run_files.CONFIG} (a run writes "
        "it before its first step).") from None
  except (tf.errors.OpError, ValueError) as e:
    raise RunNotFoundError(f"Cannot read {path}: {e}") from None
  if not isinstance(values, dict):
    raise RunNotFoundError(f"{path} does not hold a JSON object.")
  config = defaults.base_config()
  try:
    config.update(values)
  except (TypeError, ValueError, KeyError, AttributeError) as e:
    # A field of the wrong type (the file was edited, or written by something else).
    raise RunNotFoundError(f"{path} does not hold a config of this version of vae_dist: "
                           f"{' '.join(str(e).split())[:300]}. Put back the config the run "
                           "was trained with.") from None
  for field, value in (overrides or {}).items():
    if value is not None:
      config[field] = value
  try:
    checks.validate(config)
  except ConfigError as e:
    raise RunNotFoundError(f"{path} (or a flag that overrides it) is not a usable config: {e} "
                           "Put back the config the run was trained with.") from None
  return config


def committed_steps(workdir: str) -> list:
  """The committed checkpoint steps of a run, ascending ([] when there are none)."""
  # A reader: it never cleans up what a training run may still be writing.
  return checkpointing.CheckpointReader(directory=checkpoints_dir(workdir)).all_steps()


def resolve_step(workdir: str, step: Optional[int] = None) -> int:
  """`step` if it is committed, or the latest committed step when `step` is None.

  Raises:
    NoCheckpointError: the run has no committed checkpoint, or not `step`.
  """
  steps = committed_steps(workdir)
  if not steps:
    raise NoCheckpointError(
        f"{workdir} has no committed checkpoint under {checkpoints_dir(workdir)}: train first "
        "(a run commits one every config.checkpoint_every_steps steps and at its end).")
  if step is None:
    return steps[-1]
  if int(step) not in steps:
    raise NoCheckpointError(f"{workdir} has no committed checkpoint for step {step}; committed "
                            f"steps: {', '.join(map(str, steps))}.")
  return int(step)


def state_prefix(workdir: str, step: int) -> str:
  """The tf.train.Checkpoint prefix of step `step` of the run."""
  return checkpointing.state_prefix(os.path.join(checkpoints_dir(workdir), str(int(step))))


def build_model(config: ml_collections.ConfigDict,
                strategy: Optional[tf.distribute.Strategy] = None) -> networks.VAE:
  """A VAE with the run's architecture, created under `strategy` (default: the current one)."""
  # The tools compute in float32 whatever the run trained with: the weights are float32 under
  # every mixed-precision policy, and evaluation and export want full precision.
  strategy = strategy or tf.distribute.get_strategy()
  return train_state.create_train_state(config, strategy, with_optimizer=False,
                                        mixed_precision="none").model


def restore_weights(model: networks.VAE, workdir: str, step: int) -> str:
  """Reads the model's weights of checkpoint `step` into `model`.

  Returns:
    The checkpoint prefix read.

  Raises:
    CheckpointError: the checkpoint holds a model of other shapes than the one built from the
      config (for example a config.json edited after training).
    WorkdirError: the checkpoint cannot be read or lacks some of the model's weights.
  """
  prefix = state_prefix(workdir, step)
  # The tools build the model from the run's own config.json, so a mismatch means it changed.
  advice = (f"The model was built from {run_files.RunDir(workdir).config}: put back the "
            "model fields the run was trained with.")
  status = checkpointing.restore_checkpoint(prefix, tf.train.Checkpoint(model=model),
                                            expect_partial=True, advice=advice)
  try:
    # Every variable of the model must come from the file; the optimizer's may be left over.
    status.assert_existing_objects_matched()
  except AssertionError as e:
    raise WorkdirError(f"Checkpoint {prefix} does not hold all weights of the model described "
                       f"by {run_files.RunDir(workdir).config}: {e}") from None
  return prefix


def restore_newest_intact(model: networks.VAE, workdir: str, step: Optional[int] = None) -> tuple:
  """Restores `step`, or the newest committed step that loads; returns (step, prefix).

  Tools never change a workdir: a damaged step is skipped with a warning (training sets it
  aside at its next start), and a step that training's retention deletes while it is read is
  replaced by the newest one left.

  Raises:
    NoCheckpointError: no committed step, or not `step`, or (with `step`) it was deleted.
    DamagedCheckpointError: `step` was asked for and does not load; or no step loads.
    CheckpointError, WorkdirError: see restore_weights.
  """
  if step is not None:
    step = resolve_step(workdir, step)
    try:
      return step, restore_weights(model, workdir, step)
    except DamagedCheckpointError:
      if int(step) not in committed_steps(workdir):
        raise NoCheckpointError(
            f"checkpoint step {step} of {workdir} was deleted while it was read (the training "
            "run keeps config.max_to_keep steps); committed steps now: "
            f"{', '.join(map(str, committed_steps(workdir))) or 'none'}.") from None
      raise
  tried = set()
  damaged = []
  while True:
    candidates = [s for s in committed_steps(workdir) if s not in tried]
    if not candidates:
      if damaged:
        raise DamagedCheckpointError(
            f"no checkpoint of {workdir} loads: {'; '.join(damaged)}. Start the training "
            "command again: it sets damaged steps aside and trains from the newest intact one.")
      resolve_step(workdir)  # Raises NoCheckpointError.
    newest = candidates[-1]
    tried.add(newest)
    try:
      prefix = restore_weights(model, workdir, newest)
    except DamagedCheckpointError as e:
      if newest in committed_steps(workdir):
        damaged.append(str(e))
        logging.warning("%s Using the previous committed step.", e)
      else:
        logging.warning("Checkpoint step %d was deleted while it was read (training's "
                        "retention); using the newest step left.", newest)
      continue
    return newest, prefix


@dataclasses.dataclass
class TrainedRun:
  """A run's config and its model at one committed step."""
  workdir: str
  config: ml_collections.ConfigDict
  step: int
  model: networks.VAE
  prefix: str

  def restore(self, step: int) -> None:
    """Switches the model to the weights of another committed step."""
    step = resolve_step(self.workdir, step)
    self.prefix = restore_weights(self.model, self.workdir, step)
    self.step = step


def load(workdir: str, step: Optional[int] = None, *,
         strategy: Optional[tf.distribute.Strategy] = None,
         overrides: Optional[dict] = None) -> TrainedRun:
  """Loads a run's config and its model with the weights of `step` (default: the latest).

  Args:
    workdir: the run's workdir.
    step: a committed checkpoint step, or None for the latest.
    strategy: the tf.distribute strategy to create the model under (default: the current one).
    overrides: config fields to replace (see load_config).

  Returns:
    A TrainedRun.

  Raises:
    RunNotFoundError, NoCheckpointError, WorkdirError: see load_config, resolve_step and
      restore_weights.
  """
  config = load_config(workdir, overrides)
  resolve_step(workdir, step)  # No checkpoint: say so before building the model.
  model = build_model(config, strategy)
  step, prefix = restore_newest_intact(model, workdir, step)
  logging.info("Loaded %s at step %d.", workdir, step)
  return TrainedRun(workdir=workdir, config=config, step=step, model=model, prefix=prefix)

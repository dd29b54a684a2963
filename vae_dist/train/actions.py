"""What a run does between host loops, one small callable each (as CLU's periodic actions).

The loop (loop.py) runs a host loop of train steps, makes a Boundary of what it learnt, and hands
it to every action in order. Adding periodic work is one more action in that list, never an edit
in the middle of the loop. Order matters and is the list's: the finiteness check first (a run
that diverged must not log, evaluate or save its NaNs), then reporting, evaluation, saving, the
summaries' flush.
"""
import dataclasses
import time
from typing import Optional

from absl import logging
import numpy as np
import tensorflow as tf

from vae_dist.errors import TrainingError
from vae_dist.report import progress
from vae_dist.train import distribution
from vae_dist.train import optimizers
from vae_dist.train import preemption
from vae_dist.train import steps


@dataclasses.dataclass
class Boundary:
  """The end of one host loop, as every action sees it."""
  step: int  # The train step counter after the loop.
  status: steps.LoopStatus  # What the loop reported (non-finite steps).
  done: bool  # The run reached its last step.
  # Every worker agreed to stop here (a preemption notice): save and leave. Set by AgreeToStop,
  # as late as possible (after evaluation, which can be long) and before Save.
  stop: bool = False


def due(boundary: Boundary, every: int) -> bool:
  """Whether a periodic action with cadence `every` runs at this boundary (always at the end)."""
  return boundary.step % every == 0 or boundary.done


class ShowProgress:
  """Redraws the progress line (step, rate, ETA) on a terminal; nothing without one."""

  def __init__(self, line: Optional[progress.LoopProgress]):
    self._line = line  # None on workers other than the chief.

  def __call__(self, boundary: Boundary) -> None:
    if self._line is not None:
      self._line.update(boundary.step)


class CheckFinite:
  """Ends the run on non-finite losses or gradients, and reports the steps it skipped.

  With config.skip_nonfinite_steps = N > 0 non-finite steps are skipped and the run stops only
  at N in a row; with 0, at the first one.
  """

  def __init__(self, trainer: steps.Trainer):
    self._trainer = trainer

  def __call__(self, boundary: Boundary) -> None:
    trainer = self._trainer
    skipped = trainer.new_skipped_steps(boundary.status)
    if skipped:
      logging.warning("Skipped %d non-finite steps up to step %d.", skipped, boundary.step)
    bad = boundary.status.nonfinite_stop
    if bad >= 0 and trainer.skip_limit:
      limit = trainer.skip_limit
      raise TrainingError(
          f"the loss or its gradients were NaN or Inf at {limit} consecutive steps, the last "
          f"at step {bad}; all {limit} were skipped (config.skip_nonfinite_steps={limit}) and "
          "training did not recover (the weights may no longer be finite); stopping. "
          "Checkpoints already committed are unchanged; lower config.learning_rate or set "
          "config.grad_clip_norm and start again.")
    if bad >= 0:
      raise TrainingError(
          f"the loss or its gradients became NaN or Inf at step {bad}; stopping. Checkpoints "
          "already committed are unchanged; lower config.learning_rate or set "
          "config.grad_clip_norm and start again.")


class ReportTrain:
  """Writes the train metrics since the last report, with the speed and the learning rate."""

  def __init__(self, *, trainer: steps.Trainer, summaries, throughput, every: int):
    self._trainer = trainer
    self._summaries = summaries
    self._throughput = throughput
    self._every = every

  def __call__(self, boundary: Boundary) -> None:
    if not due(boundary, self._every):
      return
    optimizer = self._trainer.optimizer
    metrics, kl_dims = self._trainer.read_train_metrics()
    metrics.update(self._throughput.metrics())
    metrics["train/learning_rate"] = optimizers.current_learning_rate(optimizer)
    if isinstance(optimizer, tf.keras.optimizers.LossScaleOptimizer):
      metrics["train/loss_scale"] = float(optimizer.dynamic_scale.numpy())
    self._summaries.train(boundary.step, metrics, kl_dims, self._throughput.eta())


class Evaluate:
  """The exact eval ELBO at its cadence; keeps the latest result for the checkpoint and report.

  Attributes:
    metrics: the latest eval metrics ({} before the first evaluation).
    step: the step they were computed at (-1 before the first evaluation).
  """

  def __init__(self, *, evaluator, data, num_steps: int, summaries, every: int):
    self._evaluator = evaluator
    self._data = data
    self._num_steps = num_steps
    self._summaries = summaries
    self._every = every
    self.metrics: dict = {}
    self.step = -1

  def run(self, step: int) -> tuple[dict, np.ndarray]:
    """Evaluates now, whatever the cadence."""
    self.metrics, kl_dims = self._evaluator.evaluate(self._data, self._num_steps)
    self.step = step
    return self.metrics, kl_dims

  def __call__(self, boundary: Boundary) -> None:
    if not due(boundary, self._every):
      return
    t0 = time.perf_counter()
    metrics, kl_dims = self.run(boundary.step)
    self._summaries.eval(boundary.step, metrics, kl_dims, time.perf_counter() - t0)


class AgreeToStop:
  """Sets boundary.stop when any worker was told to stop; every worker gets the same answer."""

  def __init__(self, watch: preemption.PreemptionWatch, strategy: tf.distribute.Strategy):
    self._watch = watch
    self._strategy = strategy

  def __call__(self, boundary: Boundary) -> None:
    if distribution.num_input_pipelines(self._strategy) == 1:
      boundary.stop = self._watch.requested
    else:
      # One scalar all-reduce per host loop, so that all workers stop at the same step.
      boundary.stop = distribution.sum_over_workers(
          self._strategy, float(self._watch.requested)) > 0
    if boundary.stop:
      logging.warning("Stopped at step %d after %s; start again to resume (exit status %d).",
                      boundary.step, self._watch.reason or "another worker's preemption notice",
                      preemption.RESTARTABLE_EXIT_CODE)


class Save:
  """Commits a checkpoint at its cadence, at the end, and when the run is told to stop.

  The checkpoint's metadata carries the eval metrics when they are of this very step (for
  keep_best retention).
  """

  def __init__(self, *, manager, checkpoint: tf.train.Checkpoint, metadata: dict,
               evaluate: Optional[Evaluate], every: int):
    self._manager = manager
    self._checkpoint = checkpoint
    self._metadata = metadata
    self._evaluate = evaluate
    self._every = every

  def __call__(self, boundary: Boundary) -> None:
    if not (due(boundary, self._every) or boundary.stop):
      return
    metadata = dict(self._metadata)
    if self._evaluate is not None and self._evaluate.step == boundary.step:
      metadata["metrics"] = self._evaluate.metrics
    self._manager.save(boundary.step, self._checkpoint, metadata)


class FlushSummaries:
  """Lets the summary writers flush on their own schedule (timed on object stores)."""

  def __init__(self, summaries):
    self._summaries = summaries

  def __call__(self, boundary: Boundary) -> None:
    self._summaries.flush(boundary.step)

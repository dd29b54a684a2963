"""What a run reports while it trains: log lines, metrics.jsonl and TensorBoard.

Everything is written between host loops from values the loop already brought to the host, so
summaries never add a device-to-host sync inside the loop. Only the chief writes (the writer of
the other workers does nothing); the time spent here is measured and reported, so the cost of
summaries is a number, not a guess.
"""
import os
import time

from absl import logging
import ml_collections
import tensorflow as tf

from vae_dist import metric_writers
from vae_dist import summary_images

HPARAMS = ("dataset", "image_size", "channels", "latent_dim", "likelihood", "binarize", "beta",
           "kl_warmup_steps", "batch_size", "optimizer", "learning_rate", "lr_schedule",
           "strategy", "mixed_precision", "jit_compile", "steps_per_loop", "seed")
EVAL_METRICS = ("eval/elbo", "eval/recon", "eval/kl", "eval/bits_per_dim", "eval/active_units")


class Throughput:
  """Examples/sec and ETA from host-loop wall times (the first loop includes tracing)."""

  def __init__(self, global_batch: int, start_step: int, total_steps: int):
    self.global_batch = global_batch
    self.total_steps = total_steps
    self.current = start_step
    self._t0 = None
    self._loops = 0
    self._steps = 0  # After the first loop: for the ETA.
    self._seconds = 0.0
    self._window_steps = 0  # Since the last log line.
    self._window_seconds = 0.0
    self.train_seconds = 0.0

  def start(self):
    self._t0 = time.perf_counter()

  def stop(self, current: int, n: int):
    dt = time.perf_counter() - self._t0
    self.current = current
    self.train_seconds += dt
    self._loops += 1
    self._window_steps += n
    self._window_seconds += dt
    if self._loops > 1:
      self._steps += n
      self._seconds += dt

  def metrics(self) -> dict:
    steps_per_sec = self._window_steps / max(self._window_seconds, 1e-9)
    self._window_steps, self._window_seconds = 0, 0.0
    return {
        "train/steps_per_sec": steps_per_sec,
        "train/examples_per_sec": steps_per_sec * self.global_batch,
    }

  def eta(self) -> str:
    if not self._steps:
      return "?"
    seconds = (self.total_steps - self.current) * self._seconds / self._steps
    return time.strftime("%H:%M:%S", time.gmtime(seconds))


def _timed(method):
  """Adds the method's wall time to self.seconds."""

  def wrapper(self, *args, **kwargs):
    t0 = time.perf_counter()
    try:
      return method(self, *args, **kwargs)
    finally:
      self.seconds += time.perf_counter() - t0

  return wrapper


class RunSummaries:
  """Writes train and eval results of one run.

  Args (keyword-only):
    config: the run's config.
    workdir: the run's directory.
    chief: whether this process writes.
    strategy, model, builder: for the eval images (see summary_images.SummaryImages).
    num_replicas: replica count, shown with the hyperparameters.
    total_steps: the run's last step, for the log lines.
  """

  def __init__(self, *, config: ml_collections.ConfigDict, workdir: str, chief: bool, strategy,
               model, builder, num_replicas: int, total_steps: int):
    self.config = config
    self.total_steps = total_steps
    self.chief = chief
    self.writer = metric_writers.MetricWriter(workdir=workdir, enabled=chief)
    self.images = summary_images.SummaryImages(
        config=config, strategy=strategy, model=model, builder=builder) if chief else None
    self.num_replicas = num_replicas
    self.seconds = 0.0  # Time spent writing summaries and making their images.
    self._profiling = False

  @_timed
  def start(self, start_step: int, train_graph) -> None:
    """Config text, train-step graph and hyperparameters, once per run (not on resume)."""
    if not self.chief:
      return
    if start_step > 0:
      self.writer.forget_after(start_step)
      return
    config = self.config
    self.writer.write_text(0, {"config": "```\n" + config.to_json_best_effort(indent=2) +
                                         "\n```"})
    self.writer.write_graph(train_graph)
    hparams = {name: config[name] for name in HPARAMS}
    hparams["num_replicas"] = self.num_replicas
    self.writer.write_hparams(hparams, EVAL_METRICS)
    self.writer.flush(force=True)

  @_timed
  def train(self, step: int, metrics: dict, kl_dims, eta: str) -> None:
    nan = float("nan")  # Absent when every step since the last log point was skipped.
    logging.info("step %d/%d: loss %.3f, recon %.3f, kl %.3f, %.1f examples/s, ETA %s", step,
                 self.total_steps, metrics.get("train/loss", nan), metrics.get("train/recon", nan),
                 metrics.get("train/kl", nan), metrics["train/examples_per_sec"], eta)
    metrics = dict(metrics, **{"train/active_units": float((kl_dims > 0.01).sum())})
    self.writer.write_scalars(step, metrics)
    self.writer.write_histograms(step, {"train/kl_per_latent_dim": kl_dims})

  @_timed
  def eval(self, step: int, metrics: dict, kl_dims, seconds: float) -> None:
    logging.info("eval at step %d: ELBO %.3f nats (recon %.3f, kl %.3f), %.4f bits/dim, "
                 "%d examples, %d active units, %.1fs", step, metrics["eval/elbo"],
                 metrics["eval/recon"], metrics["eval/kl"], metrics["eval/bits_per_dim"],
                 metrics["eval/examples"], metrics["eval/active_units"], seconds)
    self.writer.write_scalars(step, metrics)
    self.writer.write_histograms(step, {"eval/kl_per_latent_dim": kl_dims})
    if self.images is not None:
      self.writer.write_images(step, self.images.make(step))

  def profile(self, step: int, logdir: str) -> None:
    """Starts or stops the profiler at host-loop boundaries inside config.profile_steps."""
    if not self.config.profile_steps or not self.chief:
      return
    first, last = self.config.profile_steps
    if not self._profiling and first <= step < last:
      logging.info("Profiling from step %d to %d into %s.", step, last, logdir)
      tf.profiler.experimental.start(logdir)
      self._profiling = True
    elif self._profiling and step >= last:
      tf.profiler.experimental.stop()
      self._profiling = False
      logging.info("Profile written to %s (TensorBoard's Profile tab).",
                   os.path.join(logdir, "plugins", "profile"))

  @_timed
  def flush(self, step: int) -> None:
    """After each host loop. On object stores the writer uploads at most once a minute, and the
    metrics lines also when `step` saved a checkpoint, so that a resume finds them all."""
    checkpointed = (step % self.config.checkpoint_every_steps == 0 or step >= self.total_steps)
    self.writer.flush(metrics_now=checkpointed)

  def close(self, train_seconds: float) -> None:
    if self._profiling:
      tf.profiler.experimental.stop()
      self._profiling = False
    self.writer.close()
    if self.chief and train_seconds > 0:
      logging.info("Summaries took %.2f s, %.1f%% of the %.1f s spent in train loops.",
                   self.seconds, 100.0 * self.seconds / train_seconds, train_seconds)

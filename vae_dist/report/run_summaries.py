"""What a run reports while it trains: log lines, metrics.jsonl and TensorBoard.

Everything is written between host loops from values the loop already brought to the host, so
summaries never add a device-to-host sync inside the loop. Only the chief writes (the writer of
the other workers does nothing); the time spent here is measured and reported, so the cost of
summaries is a number, not a guess.
"""
import json
import os
import time
from typing import Optional
import uuid

from absl import logging
import ml_collections
import tensorflow as tf

from vae_dist import fileio
from vae_dist.report import metric_writers
from vae_dist.viz import summary_images

HPARAMS = ("dataset", "image_size", "channels", "latent_dim", "likelihood", "binarize", "beta",
           "kl_warmup_steps", "batch_size", "optimizer", "learning_rate", "lr_schedule",
           "strategy", "mixed_precision", "jit_compile", "steps_per_loop", "seed")


def typed_hparams(config: ml_collections.ConfigDict, names) -> dict:
  """name -> the config value as the HParams plugin types it: bool, number or string.

  None, tuples and other values become their text, so every run gives a field the same type
  (the plugin falls back to a string column when runs disagree on a field's type).
  """
  out = {}
  for name in names:
    value = config[name]
    if isinstance(value, (bool, int, float, str)):
      out[name] = value
    else:
      out[name] = str(value)
  return out


def trial_id(workdir: str) -> str:
  """The run's unique id in the HParams tab: 'parent/base (full path or URL, random tag)'.

  The plugin makes one row per trial id, so the workdir's base name alone would merge
  `a/seed0` and `b/seed0`. The table cuts long ids short, so the id starts with the workdir's
  last two names (what tells runs of one sweep apart), then the full path or URL; the random tag
  keeps apart runs written at the same path on different machines and gathered under one
  logdir later. It is written once, at the run's first start, into the event file: a resume
  does not write it again, and moving the directory moves it along.
  """
  where = (workdir if not fileio.is_local(workdir) else os.path.abspath(workdir)).rstrip("/")
  parent, base = os.path.split(where)
  short = f"{os.path.basename(parent)}/{base}" if os.path.basename(parent) else base
  return f"{short} ({where}, {uuid.uuid4().hex[:8]})"


def forward_graph(model, config: ml_collections.ConfigDict):
  """The graph of the model's forward pass (encode, sample z, decode), for the Graphs tab.

  Traced, never run, on a [batch, S, S, C] input. Returns None (with a warning) if tracing fails
  on this strategy: the graph is a picture, not worth stopping a run for.
  """
  spec = tf.TensorSpec([None, config.image_size, config.image_size, config.channels],
                       tf.float32, name="images")

  def forward(images):
    with tf.name_scope("encode"):
      mean, logvar = model.encode(images, training=False)
    with tf.name_scope("sample_z"):
      z = mean + tf.exp(0.5 * logvar) * tf.random.normal(tf.shape(mean))
    with tf.name_scope("decode"):
      logits = model.decode(z, training=False)
    with tf.name_scope("likelihood_mean"):
      return tf.sigmoid(logits)

  try:
    return tf.function(forward, input_signature=[spec]).get_concrete_function().graph
  except Exception as e:  # pylint: disable=broad-except
    logging.warning("TensorBoard gets no graph of the model (tracing it failed: %s).", e)
    return None


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


def profile_plugin_note() -> str:
  """'' when TensorBoard can show profiles here, else what to install so that it can."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  if importlib.util.find_spec("xprof") or importlib.util.find_spec("tensorboard_plugin_profile"):
    return ""
  return (" TensorBoard shows it only with the profile plugin: pip install "
          "'tensorboard-plugin-profile>=2.20' (or this package's extra: pip install "
          "'vae_dist[profile]').")


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
    self.workdir = workdir
    self.model = model
    self.total_steps = total_steps
    self.chief = chief
    self.writer = metric_writers.MetricWriter(workdir=workdir, enabled=chief)
    self.images = summary_images.SummaryImages(
        config=config, strategy=strategy, model=model, builder=builder) if chief else None
    self.num_replicas = num_replicas
    self.seconds = 0.0  # Time spent writing summaries and making their images.
    self._profiling = False

  @_timed
  def start(self, start_step: int, train_graph, run_info: Optional[dict] = None) -> None:
    """Config text, graphs and hyperparameters once per run; this start's run info every time.

    The `train` run's graph is the host loop (`train_graph`, as traced by the trainer); the
    `eval` run's graph is the model's forward pass, the one a user looks for in the Graphs tab.
    `run_info` (versions, git commit, host, parameters: report/run_info.py) is written as text
    at the step this start begins from, so a resumed run shows what each part ran on.
    """
    if not self.chief:
      return
    if start_step > 0:
      self.writer.forget_after(start_step)
    if run_info is not None:
      self.writer.write_text(start_step, {
          "run_info": "```\n" + json.dumps(run_info, indent=2, sort_keys=True) + "\n```"})
    if start_step > 0:  # The rest was written at the run's first start.
      self.writer.flush(force=True)
      return
    config = self.config
    self.writer.write_text(0, {"config": "```\n" + config.to_json_best_effort(indent=2) +
                                         "\n```"})
    self.writer.write_graph(train_graph, run="train")
    if self.model is not None:
      model_graph = forward_graph(self.model, config)
      if model_graph is not None:
        self.writer.write_graph(model_graph, run="eval")
    hparams = typed_hparams(config, HPARAMS)
    hparams["num_replicas"] = self.num_replicas
    self.writer.write_hparams(hparams, trial_id(self.workdir))
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
      logging.info("Profiling from step %d to %d into %s.%s", step, last, logdir,
                   profile_plugin_note())
      tf.profiler.experimental.start(logdir)
      self._profiling = True
    elif self._profiling and step >= last:
      tf.profiler.experimental.stop()
      self._profiling = False
      logging.info("Profile written to %s (TensorBoard's Profile tab).%s",
                   os.path.join(logdir, "plugins", "profile"), profile_plugin_note())

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

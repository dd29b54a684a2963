"""Test log-likelihood of a trained run: python -m vae_dist.evaluate --workdir=DIR [flags].

Computes, over the whole eval split (config.eval_split, every example exactly once):

  elbo   the exact test ELBO of training's evaluation (eval_input.eval_dataset_fn and
         train.evaluator.Evaluator: one fixed latent noise draw per example, analytic KL);
  iwae   the importance-weighted bound L_K on log p(x) with K = --num_samples (default: the
         largest of 1000, 500, 200, ... that takes about 5 minutes or less here, timed on the
         first batches), see vae_dist/model/iwae.py; elbo <= iwae <= log p(x) in expectation;

both in nats per image and in bits per dimension (objective.Likelihood.bits_per_dim). The result is written as
JSON to <workdir>/evaluations/step_<step>_k<K>.json (or --out), through a temporary file and a
rename, and printed.

It runs under the same tf.distribute strategies as training: the run's config.strategy and
config.num_cpu_devices unless --strategy / --num_cpu_devices / --tpu say otherwise. --batch_size
sets the global eval batch (a multiple of the replica count). The K samples are decoded in
chunks of --chunk_size samples per example (default: as many as keep one chunk's largest decoder
activation near 512 MB per replica), so memory does not grow with K. The IWAE noise of example i
depends only on (--seed, i): the result does not depend on the strategy, batch or chunk size
beyond float rounding.

  python -m vae_dist.evaluate --workdir=runs/mnist
  python -m vae_dist.evaluate --workdir=runs/mnist --num_samples=5000 --strategy=mirrored \
      --num_cpu_devices=2 --batch_size=64 --step=18750
"""
import datetime
import json
import os
import time
from typing import Optional

from absl import flags
from absl import logging
import tensorflow as tf

import vae_dist
from vae_dist import cli  # The tools' shared flags and checks.
from vae_dist.data import eval_input
from vae_dist.data import sources
from vae_dist.errors import UsageError
from vae_dist import fileio
from vae_dist.model import iwae
from vae_dist.model import objective
from vae_dist.report import progress
from vae_dist import run_files
from vae_dist.tools import trained_run
from vae_dist.train import distribution
from vae_dist.train import evaluator

EVALUATIONS_SUBDIR = "evaluations"


def default_out(workdir: str, step: int, num_samples: int) -> str:
  return os.path.join(workdir, EVALUATIONS_SUBDIR, f"step_{int(step)}_k{int(num_samples)}.json")


class IwaeEvaluator:
  """The IWAE bound over the eval split, on every replica of a strategy.

  Args (keyword-only):
    config: the run's config (with the eval overrides applied).
    strategy: the strategy the model was created under.
    model: a models.VAE with the weights to evaluate.
    builder: the prepared TFDS builder.
    num_samples: K.
    chunk_size: samples per example decoded at once; 0 chooses iwae.auto_chunk_size.
    seed: seed of the importance samples.
  """

  def __init__(self, *, config, strategy, model, builder, num_samples: int, chunk_size: int = 0,
               seed: int = 0):
    _check_sampling(num_samples, chunk_size)
    self.config = config
    self.strategy = strategy
    self.model = model
    self.builder = builder
    self.num_samples = int(num_samples)
    replicas = strategy.num_replicas_in_sync
    self.per_replica_batch = eval_input.eval_batch_size(config) // replicas
    self.likelihood = objective.Likelihood.from_config(config)
    self.chunk_size = int(chunk_size) or iwae.auto_chunk_size(
        config.image_size, max(list(config.decoder.filters) + [config.channels]),
        self.per_replica_batch, self.num_samples)
    self.seed = int(seed)
    # TPUs have no float64; elsewhere the log-densities are summed in float64.
    self.dtype = tf.float32 if isinstance(strategy, tf.distribute.TPUStrategy) else tf.float64
    self.num_steps = eval_input.num_eval_steps(builder, config, replicas,
                                                   distribution.num_input_pipelines(strategy))
    self._step_fn = tf.function(self._step)

  def _replica(self, batch):
    eps = iwae.example_noise(self.seed, batch["index"], self.num_samples,
                                   self.config.latent_dim)
    bound = iwae.iwae_bound(self.model, batch["image"], eps, self.likelihood, self.chunk_size,
                            self.dtype)
    mask = tf.cast(batch["mask"], self.dtype)
    return tf.reduce_sum(bound * mask), tf.reduce_sum(mask)

  def _step(self, batch):
    total, count = self.strategy.run(self._replica, args=(batch,))
    reduce = lambda v: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
    return reduce(total), reduce(count)

  def _iterator(self, num_steps):
    return iter(self.strategy.distribute_datasets_from_function(
        eval_input.eval_dataset_fn(self.builder, self.config, num_steps)))

  def seconds_per_step(self, probe_steps: int = 2) -> float:
    """Wall time of one eval step, from `probe_steps` steps after a first one (the trace)."""
    iterator = self._iterator(probe_steps + 1)
    float(self._step_fn(next(iterator))[1])
    t0 = time.perf_counter()
    for _ in range(probe_steps):
      float(self._step_fn(next(iterator))[1])
    return (time.perf_counter() - t0) / probe_steps

  def run(self) -> tuple:
    """Returns (mean L_K over the split in nats, number of examples)."""
    iterator = self._iterator(self.num_steps)
    total, count = 0.0, 0.0
    t0 = time.time()
    announced = False
    for i in range(self.num_steps):
      t, c = self._step_fn(next(iterator))
      total += float(t)
      count += float(c)
      if i == 0:
        t_first = time.time()  # The first step traces: the ETA counts from its end.
      elif not announced and i + 1 < self.num_steps:
        announced = True
        logging.info("IWAE (K=%d): about %s for the %d eval steps (from the first ones).",
                     self.num_samples, progress.clock(
                         (time.time() - t_first) / i * (self.num_steps - 1) + t_first - t0),
                     self.num_steps)
      if (i + 1) % 10 == 0 or i + 1 == self.num_steps:
        eta = ""
        if i > 0:
          eta = ", ETA " + progress.clock(
              (time.time() - t_first) / i * (self.num_steps - i - 1))
        logging.info("IWAE (K=%d): %d/%d eval steps, %d examples, %.1fs%s.", self.num_samples,
                     i + 1, self.num_steps, count, time.time() - t0, eta)
    return total / max(count, 1.0), int(count)


# K of the IWAE bound when --num_samples is not given: the largest of these whose estimated time
# for the whole split fits AUTO_K_BUDGET_SECONDS on this device (K=1000 took ~30 minutes over
# Fashion-MNIST's test split on a 2-core CPU; an accelerator gets 1000).
AUTO_K_CHOICES = (1000, 500, 200, 100, 50, 20, 10)
AUTO_K_BUDGET_SECONDS = 300.0
_PROBE_K = 10


def choose_num_samples(*, config, strategy, model, builder, chunk_size: int, seed: int) -> int:
  """The default K: timed on a few batches at a small K, extrapolated linearly in K."""
  probe = IwaeEvaluator(config=config, strategy=strategy, model=model, builder=builder,
                        num_samples=_PROBE_K, chunk_size=chunk_size, seed=seed)
  per_sample_step = probe.seconds_per_step() / _PROBE_K
  for k in AUTO_K_CHOICES:
    if per_sample_step * k * probe.num_steps <= AUTO_K_BUDGET_SECONDS:
      break
  logging.info("--num_samples not given: K=%d (about %s on this device for %d eval steps; "
               "K=%d would take about %s). Give --num_samples to choose.", k,
               progress.clock(per_sample_step * k * probe.num_steps), probe.num_steps,
               AUTO_K_CHOICES[0],
               progress.clock(per_sample_step * AUTO_K_CHOICES[0] * probe.num_steps))
  return k


def _check_sampling(num_samples: int, chunk_size: int) -> None:
  if num_samples < 1:
    raise UsageError(f"--num_samples must be at least 1, got {num_samples}.")
  cli.check_range("num_samples", num_samples, 1, 1_000_000)
  if chunk_size < 0:
    raise UsageError(f"--chunk_size must be positive (or 0: automatic), got {chunk_size}.")


def _strategy_for(config):
  distribution.configure_host_devices(config)
  strategy = distribution.create_strategy(config)
  replicas = strategy.num_replicas_in_sync
  batch = eval_input.eval_batch_size(config)
  if batch % replicas:
    raise UsageError(f"--batch_size: the eval batch {batch} does not divide by the {replicas} "
                     f"replicas of {type(strategy).__name__}; use a multiple of {replicas}.")
  return strategy


def evaluate(workdir: str, step: Optional[int] = None, *, num_samples: Optional[int] = 1000,
             chunk_size: int = 0, seed: int = 0, overrides: Optional[dict] = None,
             out: Optional[str] = None) -> dict:
  """Evaluates one checkpoint of a run and writes the result as JSON (chief only).

  Args:
    workdir: the run's workdir.
    step: the checkpoint step; default: the latest committed one.
    num_samples: K of the IWAE bound; None chooses it (choose_num_samples).
    chunk_size: samples per example decoded at once; 0: automatic.
    seed: seed of the IWAE samples.
    overrides: config fields to replace: strategy, num_cpu_devices, tpu, eval_batch_size,
      eval_num_examples, data_dir, manual_dir (None values are ignored).
    out: the JSON file; default: default_out(workdir, step, num_samples).

  Returns:
    The result (what the JSON holds), with 'out' set to the file written.

  Raises:
    VaeDistError: missing workdir or checkpoint, bad flags, unusable strategy, missing data.
  """
  if num_samples is not None:
    _check_sampling(num_samples, chunk_size)
  if out:
    run_files.check_output(out, flag="--out")
    if tf.io.gfile.isdir(out):
      raise UsageError(f"--out={out} is a directory; name the JSON file to write.")
  config = trained_run.load_config(workdir, overrides)
  requested_step = step
  step = trained_run.resolve_step(workdir, step)
  strategy = _strategy_for(config)
  for line in distribution.describe(config, strategy):
    logging.info(line)
  model = trained_run.build_model(config, strategy)
  step, prefix = trained_run.restore_newest_intact(model, workdir, requested_step)
  builder = sources.load_builder(config)
  replicas = strategy.num_replicas_in_sync

  t0 = time.time()
  likelihood = objective.Likelihood.from_config(config)
  elbo_evaluator = evaluator.Evaluator(strategy=strategy, model=model, likelihood=likelihood)
  eval_steps = eval_input.num_eval_steps(builder, config, replicas,
                                             distribution.num_input_pipelines(strategy))
  elbo_data = strategy.distribute_datasets_from_function(
      eval_input.eval_dataset_fn(builder, config, eval_steps))
  metrics, _ = elbo_evaluator.evaluate(elbo_data, eval_steps)
  elbo_seconds = time.time() - t0

  if num_samples is None:
    num_samples = choose_num_samples(config=config, strategy=strategy, model=model,
                                     builder=builder, chunk_size=chunk_size, seed=seed)
  t0 = time.time()
  iwae_evaluator = IwaeEvaluator(config=config, strategy=strategy, model=model, builder=builder,
                                 num_samples=num_samples, chunk_size=chunk_size, seed=seed)
  iwae, examples = iwae_evaluator.run()
  iwae_seconds = time.time() - t0

  result = {
      "workdir": workdir,
      "step": step,
      "checkpoint": prefix,
      "dataset": config.dataset,
      "split": eval_input.eval_split_spec(builder, config),
      "examples": examples,
      "likelihood": config.likelihood,
      "elbo": metrics["eval/elbo"],
      "elbo_recon": metrics["eval/recon"],
      "elbo_kl": metrics["eval/kl"],
      "elbo_bits_per_dim": metrics["eval/bits_per_dim"],
      "active_units": metrics["eval/active_units"],
      "iwae": iwae,
      "iwae_bits_per_dim": float(likelihood.bits_per_dim(iwae)),
      "iwae_minus_elbo": iwae - metrics["eval/elbo"],
      "num_samples": iwae_evaluator.num_samples,
      "chunk_size": iwae_evaluator.chunk_size,
      "seed": seed,
      "compute_dtype": iwae_evaluator.dtype.name,
      "strategy": type(strategy).__name__,
      "num_replicas": replicas,
      "eval_batch_size": eval_input.eval_batch_size(config),
      "seconds": {"elbo": round(elbo_seconds, 3), "iwae": round(iwae_seconds, 3)},
      "units": "nats per image (elbo, iwae); bits per dimension (*_bits_per_dim)",
      "tensorflow_version": tf.__version__,
      "vae_dist_version": vae_dist.__version__,
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
  }
  if metrics["eval/examples"] != examples:
    # Both passes read the same pipeline; a mismatch is a bug, not a user error.
    raise RuntimeError(f"ELBO saw {metrics['eval/examples']} examples, IWAE {examples}.")
  out = out or default_out(workdir, step, iwae_evaluator.num_samples)
  result["out"] = out
  if distribution.is_chief(strategy):
    tf.io.gfile.makedirs(os.path.dirname(out) or ".")
    fileio.write_text_atomic(out, json.dumps(result, indent=2, sort_keys=True))
  return result


def define_flags() -> None:
  cli.define_common_flags()
  flags.DEFINE_integer("num_samples", None, "K, importance samples per image of the IWAE bound. "
                       "Default: the largest of 1000, 500, 200, ... that takes about 5 minutes "
                       "or less on this device (timed on the first batches).")
  flags.DEFINE_integer("chunk_size", 0, "Samples per image decoded at once (0: automatic).")
  flags.DEFINE_integer("seed", 0, "Seed of the importance samples.")
  flags.DEFINE_string("out", None, "JSON file to write; default "
                      "<workdir>/evaluations/step_<step>_k<K>.json.")
  flags.DEFINE_string("strategy", None, "tf.distribute strategy (config.strategy values); "
                      "default: the run's.")
  flags.DEFINE_integer("num_cpu_devices", None, "Split the host CPU into N logical devices; "
                       "default: the run's config.num_cpu_devices.")
  flags.DEFINE_string("tpu", None, "TPU name or grpc:// address (sets config.tpu).")
  flags.DEFINE_integer("batch_size", None, "Global eval batch; default: the run's eval batch.")
  flags.DEFINE_integer("max_examples", None, "Evaluate the first N examples of the split only "
                       "(-1: all); default: the run's config.eval_num_examples.")


def main(argv):
  del argv
  f = flags.FLAGS
  cli.check_common_flags()
  cli.check_range("seed", f.seed, 0, cli.MAX_SEED)
  if f.batch_size is not None:
    cli.check_range("batch_size", f.batch_size, 1)
  if f.max_examples is not None:
    cli.check_range("max_examples", f.max_examples, 1, allow=(-1,),
                         why="-1 evaluates the whole split")
  if f.num_cpu_devices is not None:
    cli.check_range("num_cpu_devices", f.num_cpu_devices, 0, 1024)
  overrides = cli.data_overrides()
  overrides.update(strategy=f.strategy, num_cpu_devices=f.num_cpu_devices, tpu=f.tpu,
                   eval_batch_size=f.batch_size, eval_num_examples=f.max_examples)
  result = evaluate(f.workdir, f.step, num_samples=f.num_samples, chunk_size=f.chunk_size,
                    seed=f.seed, overrides=overrides, out=f.out)
  print(json.dumps(result, indent=2, sort_keys=True), flush=True)


def run():
  """The vae-dist-evaluate console script."""
  define_flags()
  cli.run(main, description=__doc__)


if __name__ == "__main__":
  run()

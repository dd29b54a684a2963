"""vae_dist.evaluate and the IWAE bound, on a tiny trained run with a one-dimensional latent.

With latent_dim 1 the true log-likelihood log p(x) = log integral p(x|z) N(z; 0, 1) dz can be
computed by brute force on a fine grid of z, so the bound can be checked against it.
"""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import cli
from conftest import load_config
import trained_run_fixture
from vae_dist import cli as vae_cli
from vae_dist.data import sources
from vae_dist.data import split_examples
from vae_dist import errors
from vae_dist import evaluate
from vae_dist.model import iwae
from vae_dist.model import objective
from vae_dist.tools import trained_run

N_TEST = trained_run_fixture.NUM_TEST


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  return trained_run_fixture.shared_run(tmp_path_factory, "--config.latent_dim=1")


@pytest.fixture(scope="module")
def loaded(run):
  """The run's model at its last step, with its test images and their indices."""
  model_run = trained_run.load(run["workdir"])
  builder = sources.load_builder(model_run.config)
  batch = split_examples.concat(list(split_examples.iter_batches(
      builder, model_run.config, model_run.config.eval_split)))
  return model_run, batch["image"], batch["index"]


def _likelihood(model_run):
  return objective.Likelihood.from_config(model_run.config)


def _final_eval(workdir):
  return [r for r in cli.read_metrics(workdir) if "eval/elbo" in r][-1]


def _mean_iwae(model_run, images, index, num_samples, seeds, chunk_size=100):
  """Mean of L_K over the test images, averaged over independent draws (one per seed)."""
  fn = tf.function(lambda x, eps: iwae.iwae_bound(model_run.model, x, eps, _likelihood(model_run),
                                                  chunk_size), reduce_retracing=True)
  values = [fn(tf.constant(images), iwae.example_noise(
      seed, index, num_samples, 1)).numpy() for seed in seeds]
  return float(np.mean(values)), np.mean(values, axis=0)


def _brute_force_log_px(model_run, images, num_points=1001, limit=8.0):
  """log p(x) per image: log-sum-exp over a grid of z of log p(x|z) + log N(z) + log dz."""
  z = np.linspace(-limit, limit, num_points)
  decoded = model_run.model.decode(tf.constant(z[:, None], tf.float32)).numpy().astype(np.float64)
  log_joint = []
  for x in images.astype(np.float64):
    ll = _likelihood(model_run).log_prob(tf.constant(np.repeat(x[None], num_points, 0)),
                                         tf.constant(decoded)).numpy()
    log_joint.append(ll - 0.5 * z**2 - 0.5 * math.log(2 * math.pi) + math.log(z[1] - z[0]))
  log_joint = np.stack(log_joint)
  top = log_joint.max(axis=1, keepdims=True)
  return top[:, 0] + np.log(np.exp(log_joint - top).sum(axis=1))


def test_cli_writes_and_prints_elbo_and_iwae_and_two_replicas_agree(run, tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "vae_dist.evaluate", f"--workdir={run['workdir']}",
       "--num_samples=12", "--chunk_size=12"],
      cwd=cli.ROOT, env=cli.env(), capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  path = os.path.join(run["workdir"], "evaluations", "step_60_k12.json")
  with open(path) as f:
    one = json.load(f)
  assert json.loads(proc.stdout) == one
  assert not os.path.exists(path + ".tmp")
  assert one["examples"] == N_TEST and one["step"] == 60 and one["num_replicas"] == 1
  assert one["num_samples"] == 12 and one["chunk_size"] == 12
  # The ELBO is training's own evaluation of the same checkpoint.
  final = _final_eval(run["workdir"])
  assert one["elbo"] == pytest.approx(final["eval/elbo"], rel=1e-5)
  assert one["elbo_bits_per_dim"] == pytest.approx(final["eval/bits_per_dim"], rel=1e-5)
  # Binary 28x28 images: bits/dim = -log p / (784 ln 2).
  assert one["iwae_bits_per_dim"] == pytest.approx(-one["iwae"] / (784 * math.log(2)))
  assert math.isfinite(one["iwae"]) and one["iwae"] > one["elbo"]

  # Two replicas, another batch and chunk size: the noise of an example depends on its index
  # only, so both numbers are the same up to float rounding.
  two = evaluate.evaluate(
      run["workdir"], num_samples=12, chunk_size=5, out=str(tmp_path / "two.json"),
      overrides={"strategy": "mirrored", "num_cpu_devices": 2, "eval_batch_size": 6})
  assert two["num_replicas"] == 2 and two["examples"] == N_TEST
  assert two["elbo"] == pytest.approx(one["elbo"], rel=1e-5)
  assert two["iwae"] == pytest.approx(one["iwae"], rel=1e-6)
  assert json.load(open(tmp_path / "two.json"))["iwae"] == two["iwae"]


def test_iwae_with_one_sample_is_the_elbo_in_expectation(loaded):
  model_run, images, _ = loaded
  # M draws per image, the same draws for both: then L_1 - ELBO is the Monte Carlo KL estimate
  # minus the analytic KL, whose mean must vanish.
  m = 100
  x = np.repeat(images, m, axis=0)
  eps = tf.random.stateless_normal([len(x), 1], seed=[3, 4], alg="philox")
  iwae1 = iwae.iwae_bound(model_run.model, tf.constant(x), eps[:, None, :],
                          _likelihood(model_run), 1).numpy()
  elbo = objective.elbo_terms(model_run.model, tf.constant(x), eps, False,
                              _likelihood(model_run))["elbo"].numpy().astype(np.float64)
  diff = iwae1 - elbo
  stderr = diff.std() / math.sqrt(len(diff))
  assert abs(diff.mean()) < 4 * stderr + 1e-3, (diff.mean(), stderr)
  assert diff.std() > 0  # The two are not the same estimator sample by sample.


def test_iwae_rises_with_k_and_stays_below_the_brute_force_log_likelihood(loaded):
  model_run, images, index = loaded
  l1, _ = _mean_iwae(model_run, images, index, 1, seeds=range(10))
  l10, _ = _mean_iwae(model_run, images, index, 10, seeds=range(4))
  l100, _ = _mean_iwae(model_run, images, index, 100, seeds=range(1))
  log_px = _brute_force_log_px(model_run, images)
  coarse = _brute_force_log_px(model_run, images, num_points=401)
  np.testing.assert_allclose(coarse, log_px, atol=1e-3)  # The grid is fine enough.
  print(f"L_1 {l1:.3f}  L_10 {l10:.3f}  L_100 {l100:.3f}  log p(x) {log_px.mean():.3f}")
  assert l1 < l10 < l100 <= log_px.mean() + 0.01
  # The bound is close for K = 100, so the brute force is not a loose check.
  assert log_px.mean() - l100 < 2.0


def test_chunks_give_the_same_bound_as_one_log_sum_exp(loaded):
  model_run, images, index = loaded
  x = tf.constant(images[:4])
  eps = iwae.example_noise(7, index[:4], 30, 1)
  mean, logvar = model_run.model.encode(x)
  lw = iwae.log_weights(model_run.model, x, mean, logvar, eps, _likelihood(model_run)).numpy()
  top = lw.max(axis=1, keepdims=True)
  want = top[:, 0] + np.log(np.exp(lw - top).mean(axis=1))
  for chunk in (1, 7, 30, 64):
    got = iwae.iwae_bound(model_run.model, x, eps, _likelihood(model_run), chunk).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-9)
  assert lw.dtype == np.float64
  # Static shapes throughout (what TPUs need): XLA compiles it, and float32 (TPUs have no
  # float64) stays within 1e-3 nats.
  xla = tf.function(lambda x, eps: iwae.iwae_bound(
      model_run.model, x, eps, _likelihood(model_run), 7, tf.float32), jit_compile=True)
  np.testing.assert_allclose(xla(x, eps).numpy(), want, atol=1e-3)


def _chunk_size(config, **kwargs):
  widest = max(list(config.decoder.filters) + [config.channels])
  return iwae.auto_chunk_size(config.image_size, widest, **kwargs)


def test_auto_chunk_size_bounds_memory():
  small = load_config("mnist")
  chunk = _chunk_size(small, per_replica_batch=8, num_samples=1000)
  # 8 x chunk decodes whose widest activation is 28 x 28 x 64 floats: within 512 MB.
  assert 100 < chunk < 1000 and 8 * chunk * 28 * 28 * 64 * 4 <= 512 * 2**20
  assert _chunk_size(small, per_replica_batch=8, num_samples=10) == 10
  big = load_config("cartoon")
  chunk = _chunk_size(big, per_replica_batch=8, num_samples=1000)
  assert 1 <= chunk < 10
  assert _chunk_size(big, per_replica_batch=10**6, num_samples=1000) == 1


def test_errors(run, tmp_path):
  with pytest.raises(trained_run.RunNotFoundError, match="does not exist"):
    evaluate.evaluate(str(tmp_path / "missing"))
  empty = tmp_path / "no_checkpoint"
  empty.mkdir()
  (empty / "config.json").write_text(open(os.path.join(run["workdir"], "config.json")).read())
  with pytest.raises(trained_run.NoCheckpointError, match="no committed checkpoint"):
    evaluate.evaluate(str(empty))
  with pytest.raises(trained_run.NoCheckpointError, match="committed steps: 20, 40, 60"):
    evaluate.evaluate(run["workdir"], step=50)
  with pytest.raises(vae_cli.UsageError, match="does not divide by the 3 replicas"):
    evaluate.evaluate(run["workdir"], overrides={"strategy": "mirrored", "num_cpu_devices": 3,
                                                  "eval_batch_size": 8})
  with pytest.raises(vae_cli.UsageError, match="num_samples"):
    evaluate.evaluate(run["workdir"], num_samples=0, out=str(tmp_path / "x.json"))


def test_tool_command_lines_end_a_user_error_with_one_line(capsys):
  """vae_dist.cli.run, which every tool's __main__ uses (generate's is also run for real)."""

  def main(argv):
    del argv
    raise errors.WorkdirError("Workdir /x does not exist.")

  argv = sys.argv
  sys.argv = ["vae_dist.evaluate"]
  try:
    with pytest.raises(SystemExit) as exit_info:
      vae_cli.run(main, required=())
  finally:
    sys.argv = argv
  assert exit_info.value.code == 1
  err = capsys.readouterr().err
  assert [line for line in err.splitlines() if line.startswith("error: ")] == [
      "error: Workdir /x does not exist."]
  assert "Traceback" not in err

"""The ELBO terms against independent NumPy formulas."""
import math

import numpy as np
import tensorflow as tf

from conftest import load_config
from vae_dist.model import objective


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def test_bernoulli_log_likelihood_matches_numpy():
  config = load_config("mnist")
  rng = np.random.default_rng(0)
  x = (rng.random((3, 28, 28, 1)) > 0.5).astype(np.float32)
  logits = rng.normal(size=x.shape).astype(np.float32) * 3
  p = _sigmoid(logits.astype(np.float64))
  want = (x * np.log(p) + (1 - x) * np.log(1 - p)).sum(axis=(1, 2, 3))
  got = objective.Likelihood.from_config(config).log_prob(tf.constant(x), tf.constant(logits)).numpy()
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_gaussian_log_likelihood_is_weighted_mse_plus_constant():
  config = load_config("fashion_mnist")  # gaussian, weight 1000, D = 784
  rng = np.random.default_rng(1)
  x = rng.random((2, 28, 28, 1)).astype(np.float32)
  out = rng.normal(size=x.shape).astype(np.float32)
  mean = _sigmoid(out.astype(np.float64))
  sigma2 = 784 / 2000.0
  want = (-0.5 * (x - mean)**2 / sigma2 - 0.5 * np.log(2 * np.pi * sigma2)).sum(axis=(1, 2, 3))
  got = objective.Likelihood.from_config(config).log_prob(tf.constant(x), tf.constant(out)).numpy()
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # The recipe's loss: 1000 x per-pixel MSE, up to a constant.
  mse = ((x - mean)**2).mean(axis=(1, 2, 3))
  const = 0.5 * 784 * np.log(2 * np.pi * sigma2)
  np.testing.assert_allclose(-got - const, 1000 * mse, rtol=1e-4)


def test_kl_matches_the_closed_form():
  rng = np.random.default_rng(2)
  mean = rng.normal(size=(4, 3)).astype(np.float32)
  logvar = rng.normal(size=(4, 3)).astype(np.float32)
  var = np.exp(logvar.astype(np.float64))
  want = 0.5 * (mean**2 + var - 1 - np.log(var))
  got = objective.kl_per_dim(tf.constant(mean), tf.constant(logvar)).numpy()
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  assert (got >= 0).all()


def test_bits_per_dim():
  config = load_config("mnist")
  assert math.isclose(objective.Likelihood.from_config(config).bits_per_dim(-784 * math.log(2)), 1.0, rel_tol=1e-9)
  g = load_config("fashion_mnist")
  assert math.isclose(objective.Likelihood.from_config(g).bits_per_dim(0.0), 8.0, rel_tol=1e-9)

"""Points in latent space to decode: prior noise, quantile grids, interpolations, projections.

Pure NumPy (and TensorFlow's stateless RNG for the noise), so every function is testable without
a model.
"""
import statistics

import numpy as np
import tensorflow as tf


def prior_noise(num: int, latent_dim: int, seed: int, temperature: float = 1.0) -> np.ndarray:
  """z ~ N(0, temperature^2 I): [num, latent_dim] float32, the same for a seed on every machine."""
  eps = tf.random.stateless_normal([num, latent_dim], seed=[int(seed), 0], alg="philox")
  return (float(temperature) * eps).numpy()


def normal_quantiles(n: int, low: float = 0.05, high: float = 0.95) -> np.ndarray:
  """N(0, 1) quantiles at n evenly spaced probabilities in [low, high] (the tutorials' grid)."""
  if not 0.0 < low < high < 1.0:
    raise ValueError(f"quantile range must satisfy 0 < low < high < 1, got {low}, {high}")
  normal = statistics.NormalDist()
  return np.array([normal.inv_cdf(p) for p in np.linspace(low, high, n)], np.float32)


def manifold_grid(n: int, latent_dim: int, dims=(0, 1), low: float = 0.05,
                  high: float = 0.95) -> np.ndarray:
  """Latent points of an n x n grid over two latent dimensions, the others at 0 (prior mean).

  As in the TensorFlow CVAE tutorial, row i has z[dims[1]] = q_i and column j has
  z[dims[0]] = q_j, with q the ascending Normal quantiles. With latent_dim 1 the grid is one row
  over that dimension.

  Returns:
    [rows * n, latent_dim] float32, row-major.
  """
  q = normal_quantiles(n, low, high)
  if latent_dim == 1:
    return q[:, None].astype(np.float32)
  d0, d1 = dims
  z = np.zeros([n, n, latent_dim], np.float32)
  z[:, :, d1] = q[:, None]
  z[:, :, d0] = q[None, :]
  return z.reshape(n * n, latent_dim)


def lerp(a, b, ts) -> np.ndarray:
  """Points (1 - t) a + t b for each t: [len(ts), L]."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  ts = np.asarray(ts, np.float64)[:, None]
  return ((1.0 - ts) * a + ts * b).astype(np.float32)


def slerp(a, b, ts) -> np.ndarray:
  """Spherical interpolation (White, "Sampling Generative Networks", 2016): [len(ts), L].

  Follows the great circle between the directions of a and b while interpolating the norm, which
  keeps the points at the radius where Gaussian prior mass lives; falls back to lerp when a and b
  are (anti)parallel or zero.
  """
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  na, nb = np.linalg.norm(a), np.linalg.norm(b)
  if na == 0.0 or nb == 0.0:
    return lerp(a, b, ts)
  omega = np.arccos(np.clip(np.dot(a / na, b / nb), -1.0, 1.0))
  so = np.sin(omega)
  if so < 1e-6:
    return lerp(a, b, ts)
  ts = np.asarray(ts, np.float64)[:, None]
  return (np.sin((1.0 - ts) * omega) / so * a + np.sin(ts * omega) / so * b).astype(np.float32)


def pca_2d(points) -> tuple:
  """Projects [N, L] points on their first two principal components.

  Returns:
    ([N, 2] projections, [2] fractions of the variance they explain).
  """
  x = np.asarray(points, np.float64)
  x = x - x.mean(axis=0)
  _, s, vt = np.linalg.svd(x, full_matrices=False)
  var = s**2
  total = var.sum()
  frac = var[:2] / total if total > 0 else np.zeros(2)
  return (x @ vt[:2].T).astype(np.float32), frac

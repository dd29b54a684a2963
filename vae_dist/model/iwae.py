"""The importance-weighted lower bound on log p(x) (IWAE; Burda, Grosse and Salakhutdinov, 2016).

  L_K(x) = log (1/K) sum_k w_k,   w_k = p(x|z_k) p(z_k) / q(z_k|x),   z_k ~ q(z|x) independently.

E[L_1] is the ELBO, E[L_K] never decreases with K and tends to log p(x) as K grows. Values are in
nats per example. The K samples are decoded in chunks (memory grows with the chunk, not with K),
and the chunks are combined with a running log-sum-exp: a running maximum m and a sum
s = sum_k exp(log w_k - m), rescaled whenever m grows, all in float64 (log w is a sum over every
pixel, hundreds of nats for MNIST, so exp(log w) itself is never formed). The decoder runs in
float32; its outputs are cast to float64 before the likelihood is summed (float32 on TPUs, which
have no float64; the max-shifted sums keep that accurate to about 1e-4 nats).

The noise of example i is drawn from the stateless seed (seed, i), in one [K, L] block, so the
bound of an example does not depend on the batch, the replica count or the chunk size.
"""
import math

import tensorflow as tf

from vae_dist.model import networks
from vae_dist.model import objective

_LOG_2PI = math.log(2.0 * math.pi)


def example_noise(seed, index: tf.Tensor, num_samples: int, latent_dim: int) -> tf.Tensor:
  """N(0, I) noise [B, K, L] float32; example b's is the stateless draw of (seed, index[b])."""
  seed = tf.cast(seed, tf.int64)

  def one(i):
    return tf.random.stateless_normal([num_samples, latent_dim], seed=tf.stack([seed, i]),
                                      alg="philox")

  return tf.map_fn(one, tf.cast(index, tf.int64), fn_output_signature=tf.float32)


def log_weights(model: networks.VAE, x: tf.Tensor, mean: tf.Tensor, logvar: tf.Tensor,
                eps: tf.Tensor, likelihood: objective.Likelihood,
                dtype: tf.DType = tf.float64) -> tf.Tensor:
  """log w = log p(x|z) + log p(z) - log q(z|x) for z = mean + exp(logvar / 2) * eps.

  Args:
    model: a models.VAE.
    x: images [B, S, S, C] in [0, 1].
    mean, logvar: q(z|x) for x, [B, L].
    eps: standard normal noise [B, K, L].
    likelihood: p(x|z).
    dtype: what the log-densities are summed in (float64, or float32 where there is none).

  Returns:
    [B, K] of `dtype`.
  """
  shape = tf.shape(eps)
  b, k, latent = shape[0], shape[1], shape[2]
  eps_d = tf.cast(eps, dtype)
  mean_d = tf.cast(mean, dtype)[:, None, :]
  logvar_d = tf.cast(logvar, dtype)[:, None, :]
  z = mean_d + tf.exp(0.5 * logvar_d) * eps_d
  out = model.decode(tf.reshape(tf.cast(z, tf.float32), [b * k, latent]), training=False)
  # Row b * K + j of the decoded batch is sample j of example b: repeat each image K times.
  x_rep = tf.repeat(tf.cast(x, dtype), k, axis=0)
  log_px_z = tf.reshape(likelihood.log_prob(x_rep, tf.cast(out, dtype)), [b, k])
  log_pz = -0.5 * tf.reduce_sum(tf.square(z) + _LOG_2PI, axis=-1)
  # log q(z|x) from eps itself: (z - mean) / sigma = eps exactly, without cancellation.
  log_qz = -0.5 * tf.reduce_sum(tf.square(eps_d) + logvar_d + _LOG_2PI, axis=-1)
  return log_px_z + log_pz - log_qz


def iwae_bound(model: networks.VAE, x: tf.Tensor, eps: tf.Tensor,
               likelihood: objective.Likelihood, chunk_size: int,
               dtype: tf.DType = tf.float64) -> tf.Tensor:
  """L_K(x) per example, decoding chunk_size samples of each example at a time.

  Every chunk has the same static shape (K is padded up to a multiple of chunk_size and the
  padding samples get weight 0), so the loop also compiles where shapes must be static (XLA,
  TPU).

  Args:
    model: a models.VAE.
    x: images [B, S, S, C].
    eps: the noise of all K samples, [B, K, L] (see example_noise), K static.
    likelihood: p(x|z).
    chunk_size: samples per example decoded together (B * chunk_size decodes at a time).
    dtype: float64, or float32 on devices without float64 (TPU).

  Returns:
    [B] of `dtype`, in nats.
  """
  mean, logvar = model.encode(x, training=False)
  num_samples = int(eps.shape[1])
  chunk = max(1, min(int(chunk_size), num_samples))
  num_chunks = -(-num_samples // chunk)
  padded = num_chunks * chunk
  eps = tf.pad(eps, [[0, 0], [0, padded - num_samples], [0, 0]])
  latent = int(eps.shape[2]) if eps.shape[2] is not None else tf.shape(eps)[2]
  chunks = tf.reshape(eps, [tf.shape(eps)[0], num_chunks, chunk, latent])
  batch = tf.shape(x)[0]
  running_max = tf.fill([batch], tf.constant(-math.inf, dtype))
  running_sum = tf.zeros([batch], dtype)
  for c in tf.range(num_chunks):
    lw = log_weights(model, x, mean, logvar, chunks[:, c], likelihood, dtype)
    valid = c * chunk + tf.range(chunk) < num_samples
    lw = tf.where(valid[None, :], lw, tf.constant(-math.inf, dtype))
    new_max = tf.maximum(running_max, tf.reduce_max(lw, axis=1))
    # A weight of exactly 0 everywhere so far would make -inf - -inf; keep the shift finite.
    shift = tf.where(tf.math.is_finite(new_max), new_max, tf.zeros_like(new_max))
    running_sum = (running_sum * tf.exp(running_max - shift) +
                   tf.reduce_sum(tf.exp(lw - shift[:, None]), axis=1))
    running_max = shift
  return running_max + tf.math.log(running_sum) - math.log(num_samples)


def auto_chunk_size(image_size: int, widest_channels: int, per_replica_batch: int,
                    num_samples: int, budget_bytes: int = 512 * 2**20) -> int:
  """Samples per chunk so that one chunk's largest decoder activation fits in budget_bytes.

  The largest activation is estimated as image_size^2 x the widest decoder layer
  (widest_channels, the image's channels included), in float32, per decoded latent; a chunk
  decodes per_replica_batch x chunk latents.
  """
  per_decode = image_size**2 * widest_channels * 4
  decodes = max(1, budget_bytes // per_decode)
  return int(max(1, min(num_samples, decodes // max(1, per_replica_batch))))

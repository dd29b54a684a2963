"""The ELBO, term by term, per example, in nats.

ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || N(0, I)), estimated with one reparameterised sample
z = mean + exp(logvar / 2) * eps. The caller supplies eps, so training (fresh noise every step)
and evaluation (noise fixed per test example) share this code and evaluation is reproducible.
"""
import dataclasses
import math

import ml_collections
import tensorflow as tf

from vae_dist.model import networks


@dataclasses.dataclass(frozen=True)
class Likelihood:
  """p(x|z) of one image: Bernoulli on the decoder's logits, or a fixed-variance Gaussian.

  Attributes:
    kind: 'bernoulli' or 'gaussian'.
    num_values: D, the pixel values of one image (size x size x channels).
    gaussian_mse_weight: the Gaussian's weight on the mean squared error (see log_sigma).
  """
  kind: str
  num_values: int
  gaussian_mse_weight: float = 1.0

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "Likelihood":
    """The one place that reads the likelihood's fields of a config."""
    return cls(kind=config.likelihood,
               num_values=config.image_size * config.image_size * config.channels,
               gaussian_mse_weight=float(config.gaussian_mse_weight))

  @property
  def log_sigma(self) -> float:
    """log sigma of the Gaussian: sigma^2 = D / (2 * weight).

    With that variance the reconstruction NLL is weight * mean squared error (over the D pixel
    values) plus a constant, which is the recipes' "1000 x MSE" written as a proper density.
    """
    return 0.5 * math.log(self.num_values / (2.0 * self.gaussian_mse_weight))

  def log_prob(self, x: tf.Tensor, decoder_out: tf.Tensor) -> tf.Tensor:
    """log p(x|z) per example, summed over pixels and channels. x, decoder_out: [B, H, W, C]."""
    if self.kind == "bernoulli":
      ll = -tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=decoder_out)
    else:
      log_sigma = self.log_sigma
      mean = tf.sigmoid(decoder_out)
      ll = (-0.5 * tf.square((x - mean) * math.exp(-log_sigma)) - log_sigma -
            0.5 * math.log(2.0 * math.pi))
    return tf.reduce_sum(ll, axis=[1, 2, 3])

  def bits_per_dim(self, elbo_nats) -> float:
    """Negative ELBO in bits per pixel value.

    Bernoulli data are binary, so this is -ELBO / (D ln 2). Gaussian likelihoods are densities
    on [0, 1]; for 8-bit images the discrete likelihood is approximately density / 256 per
    value, so log 256 per dimension is added (the usual convention for continuous models of
    8-bit data).
    """
    nats = -elbo_nats / self.num_values
    if self.kind == "gaussian":
      nats = nats + math.log(256.0)
    return nats / math.log(2.0)


def kl_per_dim(mean: tf.Tensor, logvar: tf.Tensor) -> tf.Tensor:
  """KL(N(mean, exp(logvar)) || N(0, 1)) per latent dimension, analytic: [B, L]."""
  return 0.5 * (tf.square(mean) + tf.exp(logvar) - 1.0 - logvar)


def elbo_terms(model: networks.VAE, x: tf.Tensor, eps: tf.Tensor, training: bool,
               likelihood: Likelihood) -> dict[str, tf.Tensor]:
  """Per-example ELBO terms.

  Args:
    model: a networks.VAE.
    x: images [B, H, W, C] in [0, 1] (binary when binarised), float32.
    eps: standard normal noise [B, latent_dim] for the reparameterised sample.
    training: passed to the layers (BatchNorm).
    likelihood: p(x|z).

  Returns:
    dict of [B] tensors: 'recon' (-log p(x|z)), 'kl', 'elbo'; and 'kl_per_dim' [B, L].
  """
  mean, logvar = model.encode(x, training=training)
  z = mean + tf.exp(0.5 * logvar) * eps
  out = model.decode(z, training=training)
  recon = -likelihood.log_prob(x, out)
  kl_dims = kl_per_dim(mean, logvar)
  kl = tf.reduce_sum(kl_dims, axis=-1)
  return {"recon": recon, "kl": kl, "elbo": -(recon + kl), "kl_per_dim": kl_dims}

"""The pictures a run shows in TensorBoard at each evaluation (drawn by viz/pictures.py, as
`generate`'s are: enlarged and labelled).

Reconstructions of fixed test images, decoded fixed prior noise (comparable across steps), an
interpolation strip between two test images, and with a 2-D latent space the decoded latent grid
and the scatter of test latent means coloured by label. The model runs on the replicas through
`strategy.run`, so this works the same on CPU, GPU and TPU.
"""
from absl import logging
import ml_collections
import numpy as np
import tensorflow as tf

from vae_dist.data import eval_input
from vae_dist.data import sources
from vae_dist.model import latent_paths
from vae_dist.viz import pictures
from vae_dist.viz import plots

_INTERPOLATION_STEPS = 10
_MANIFOLD_SIZE = 15


class SummaryImages:
  """Makes the eval images; inputs and noise are fixed at construction.

  Args (keyword-only):
    config: the run's config (num_image_examples, num_scatter_examples, latent_dim, seed).
    strategy: the strategy the model lives in.
    model: the models.VAE.
    builder: the prepared data set (its eval split gives the test images and labels).
  """

  def __init__(self, *, config: ml_collections.ConfigDict, strategy, model, builder):
    self.config = config
    self.strategy = strategy
    n = config.num_image_examples
    self.enabled = n > 0
    if not self.enabled:
      return
    self.images, _ = eval_input.image_examples(builder, config, max(n, 2))
    if len(self.images) < 2:
      logging.warning("The eval split has %d image(s): TensorBoard gets no interpolation strip "
                      "(it needs 2).", len(self.images))
    self.prior_noise = latent_paths.prior_noise(n, config.latent_dim, config.seed + 42)
    self.two_d = config.latent_dim == 2
    if self.two_d:
      self.grid = latent_paths.manifold_grid(_MANIFOLD_SIZE, 2)
      self.scatter_images, self.scatter_labels = eval_input.image_examples(
          builder, config, config.num_scatter_examples)
      self.label_names = sources.label_names(builder)

    def decode_mean(z):
      return tf.sigmoid(model.decode(z))

    def encode_mean(x):
      return model.encode(x)[0]

    @tf.function
    def decode(z):
      return strategy.run(decode_mean, args=(z,))

    @tf.function
    def encode(x):
      return strategy.run(encode_mean, args=(x,))

    self._decode, self._encode = decode, encode

  def _local(self, value):
    return self.strategy.experimental_local_results(value)[0].numpy()

  def decode(self, z):
    """Mean images of p(x|z): sigmoid of the logits (Bernoulli) or of the means (Gaussian)."""
    return self._local(self._decode(tf.constant(z, tf.float32)))

  def encode(self, x):
    """Posterior means of q(z|x)."""
    return self._local(self._encode(tf.constant(x, tf.float32)))

  def make(self, step: int) -> dict:
    """tag -> [1, H, W, C] image (float in [0, 1] or uint8)."""
    if not self.enabled:
      return {}
    n = self.config.num_image_examples
    images = self.images[:n]
    out = {
        # Test images are the eval split's first examples: columns labelled by their index.
        "eval/reconstructions": pictures.reconstructions(images, self.decode(self.encode(images)),
                                                         indices=range(len(images))),
        "eval/prior_samples": pictures.samples(self.decode(self.prior_noise)),
    }
    # A tiny eval split (an image folder of a few files) may hold a single image: no
    # interpolation then, rather than no evaluation at all.
    if len(self.images) >= 2:
      ends = self.encode(self.images[:2])
      ts = np.linspace(0.0, 1.0, _INTERPOLATION_STEPS)
      path = latent_paths.lerp(ends[0], ends[1], ts)
      out["eval/interpolation"] = pictures.interpolation(self.images[0], self.decode(path),
                                                         self.images[1], ts, ends=(0, 1))
    if self.two_d:
      q = latent_paths.normal_quantiles(_MANIFOLD_SIZE)
      out["eval/latent_grid"] = pictures.manifold(self.decode(self.grid), _MANIFOLD_SIZE,
                                                  col_values=q, row_values=q)
      png = plots.scatter_png(
          self.encode(self.scatter_images), self.scatter_labels, self.label_names,
          title=f"test latent means at step {step}", size_inches=5.0, dpi=80)
      out["eval/latent_scatter"] = tf.io.decode_png(png, channels=3).numpy()
    return {tag: getattr(image, "pixels", image)[None] for tag, image in out.items()}

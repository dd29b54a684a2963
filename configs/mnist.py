"""The TensorFlow CVAE tutorial: MNIST thresholded at 0.5, two conv layers each way, latent 2.

  python -m vae_dist.main --config=configs/mnist.py
  python -m vae_dist.main --config=configs/mnist.py --config.dataset=fashion_mnist
  python -m vae_dist.main --config=configs/mnist.py:smoke      # seconds, for a laptop or a test
"""
from vae_dist import config_defaults


def get_config(arg=None):
  c = config_defaults.base_config()
  c.name = "mnist"
  c.dataset = "mnist"
  c.image_size = 28
  c.channels = 1
  c.binarize = "static"
  c.latent_dim = 2
  c.encoder = config_defaults.conv_stack(
      filters=[32, 64], kernel_sizes=[3, 3], strides=[2, 2], padding="valid", norm="none",
      activation="relu")
  c.decoder = config_defaults.conv_stack(
      filters=[64, 32, 1], kernel_sizes=[3, 3, 3], strides=[2, 2, 1], padding="same",
      norm="none", activation="relu")
  c.decoder.initial_channels = 32  # Dense 7*7*32.
  c.decoder.dense_activation = "relu"
  c.likelihood = "bernoulli"
  c.batch_size = 32
  c.optimizer = "adam"
  c.learning_rate = 1e-4
  c.num_epochs = 10
  c.eval_every_steps = 1875  # One epoch of 60,000 images at batch 32.
  c.checkpoint_every_steps = 1875
  c.log_every_steps = 125
  c.steps_per_loop = 125
  if arg == "smoke":
    config_defaults.smoke(c)
  return c

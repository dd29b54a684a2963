"""The Fashion-MNIST recipe: four conv blocks with BatchNorm and LeakyReLU, 1000 x MSE + KL.

  python -m vae_dist.main --config=configs/fashion_mnist.py
  python -m vae_dist.main --config=configs/fashion_mnist.py:quick   # what `make run` trains
  python -m vae_dist.main --config=configs/fashion_mnist.py:smoke   # seconds
"""
from vae_dist.config import checks
from vae_dist.config import defaults


def get_config(arg=None):
  checks.check_arg(arg, ('quick', 'smoke'), __file__)
  c = defaults.base_config()
  c.name = "fashion_mnist"
  c.dataset = "fashion_mnist"
  c.image_size = 28
  c.channels = 1
  c.binarize = "none"
  c.latent_dim = 2
  c.encoder = defaults.conv_stack(
      filters=[32, 64, 64, 64], kernel_sizes=[3, 3, 3, 3], strides=[1, 2, 2, 1], padding="same",
      norm="batch", activation="leaky_relu")
  c.decoder = defaults.conv_stack(
      filters=[64, 64, 32, 1], kernel_sizes=[3, 3, 3, 3], strides=[1, 2, 2, 1], padding="same",
      norm="batch", activation="leaky_relu")
  c.decoder.initial_channels = 64  # Dense 3136 = 7*7*64.
  c.decoder.dense_activation = "none"
  c.likelihood = "gaussian"  # Sigmoid means, fixed variance: 1000 x per-pixel MSE + KL.
  c.gaussian_mse_weight = 1000.0
  c.batch_size = 128
  c.optimizer = "adam"
  c.learning_rate = 5e-4
  c.num_epochs = 10
  c.log_every_steps = 39  # A twelfth of an epoch: 10 points of the curve in a 400-step try.
  c.eval_every_steps = 468  # One epoch of 60,000 images at batch 128 (drop remainder).
  c.checkpoint_every_steps = 468
  if arg == "quick":
    # `make run`: a few minutes on a 2-core CPU.
    c.num_epochs = 2
  elif arg == "smoke":
    defaults.smoke(c)
  return c

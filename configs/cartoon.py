"""The Cartoon Set recipe: 256x256 RGB, five stride-2 conv blocks each way, latent 200.

The data is Google's Cartoon Set, downloaded by hand (see the message the run prints when the
archives are missing):

  python -m vae_dist.main --config=configs/cartoon.py --config.manual_dir=~/Downloads
  python -m vae_dist.main --config=configs/cartoon.py:smoke --config.manual_dir=...   # seconds
"""
from vae_dist.config import checks
from vae_dist.config import defaults


def get_config(arg=None):
  checks.check_arg(arg, ('smoke',), __file__)
  c = defaults.base_config()
  c.name = "cartoon"
  c.dataset = "cartoon_set"
  c.dataset_config = "10k"
  c.image_size = 256
  c.channels = 3
  c.binarize = "none"
  c.latent_dim = 200
  c.encoder = defaults.conv_stack(
      filters=[32, 64, 64, 64, 64], kernel_sizes=[3] * 5, strides=[2] * 5, padding="same",
      norm="batch", activation="leaky_relu")
  c.decoder = defaults.conv_stack(
      filters=[64, 64, 64, 32, 3], kernel_sizes=[3] * 5, strides=[2] * 5, padding="same",
      norm="batch", activation="leaky_relu")
  c.decoder.initial_channels = 64  # Dense 4096 = 8*8*64 at 256x256.
  c.decoder.dense_activation = "none"
  c.likelihood = "gaussian"
  c.gaussian_mse_weight = 10_000.0
  c.batch_size = 128
  c.learning_rate = 5e-4
  c.num_epochs = 20
  c.shuffle_buffer = 2_000
  c.log_every_steps = 50
  c.eval_every_steps = 500
  c.checkpoint_every_steps = 500
  if arg == "smoke":
    defaults.smoke(c)
    c.image_size = 32  # Same five stride-2 blocks, 1x1 at the bottom.
  return c

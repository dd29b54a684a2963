"""The TensorFlow CVAE tutorial: MNIST thresholded at 0.5, two conv layers each way, latent 2.

  python -m vae_dist.main --config=configs/mnist.py
  python -m vae_dist.main --config=configs/mnist.py --config.dataset=fashion_mnist
  python -m vae_dist.main --config=configs/mnist.py:smoke      # seconds, for a laptop or a test
"""
from vae_dist.config import checks
from vae_dist.config import defaults


def get_config(arg=None):
  checks.check_arg(arg, ('smoke',), __file__)
  c = defaults.base_config()
  c.name = "mnist"
  c.dataset = "mnist"
  defaults.tutorial_model(c)
  c.batch_size = 32
  c.optimizer = "adam"
  c.learning_rate = 1e-4
  c.num_epochs = 10
  c.eval_every_steps = 1875  # One epoch of 60,000 images at batch 32.
  c.checkpoint_every_steps = 1875
  c.log_every_steps = 25  # 16 points of the training curve in a 400-step try.
  if arg == "smoke":
    defaults.smoke(c)
  return c

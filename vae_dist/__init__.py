"""vae_dist: convolutional VAEs trained with tf.distribute."""
from vae_dist import tpu_env as _tpu_env

__version__ = "0.1.0"

# Before anything imports TensorFlow: on a Cloud TPU VM it reads its PJRT settings at import.
_tpu_env.configure()

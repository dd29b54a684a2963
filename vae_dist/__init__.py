"""vae_dist: convolutional VAEs trained with tf.distribute."""
from vae_dist import console as _console
from vae_dist import tpu_env as _tpu_env

__version__ = "0.1.0"

# Before anything imports TensorFlow: on a Cloud TPU VM it reads its PJRT settings at import, and
# its C++ runtime reads TF_CPP_MIN_LOG_LEVEL then (vae_dist's commands only; see console.py).
_console.quiet_native_stderr()
_tpu_env.configure()

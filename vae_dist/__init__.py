"""vae_dist: convolutional VAEs trained with tf.distribute."""

__version__ = "0.1.0"

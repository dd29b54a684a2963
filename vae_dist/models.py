"""The convolutional VAE: an encoder to (mean, log-variance) and a decoder to likelihood parameters.

Both halves are Keras Sequential models built from the config's layer lists, so one model family
covers the tutorial (plain ReLU convs), the Fashion-MNIST recipe (BatchNorm + LeakyReLU) and the
Cartoon Set recipe (five stride-2 blocks at 256x256).
"""
import math

import ml_collections
import tensorflow as tf

keras = tf.keras


def _activation_layer(name: str):
  if name == "none":
    return None
  if name == "leaky_relu":
    # The recipes were written with tf.keras 2's LeakyReLU slope (0.3); Keras 3 defaults to 0.2.
    return keras.layers.LeakyReLU(negative_slope=0.3)
  return keras.layers.Activation(name)


def _block(conv_cls, filters, kernel, stride, stack, synchronized_bn):
  """A conv layer with its normalisation and activation, as a list of Keras layers.

  Without normalisation a plain activation is fused into the conv, which is how the tutorial
  writes its layers (same shapes, one layer each).
  """
  if stack.norm == "none" and stack.activation in ("relu", "none"):
    act = None if stack.activation == "none" else stack.activation
    return [conv_cls(filters, kernel, strides=stride, padding=stack.padding, activation=act)]
  layers = [conv_cls(filters, kernel, strides=stride, padding=stack.padding)]
  if stack.norm == "batch":
    layers.append(keras.layers.BatchNormalization(synchronized=synchronized_bn))
  act = _activation_layer(stack.activation)
  if act is not None:
    layers.append(act)
  return layers


def decoder_initial_size(config: ml_collections.ConfigDict) -> int:
  """Spatial size of the decoder's first feature map: image_size / prod(decoder strides)."""
  return config.image_size // math.prod(config.decoder.strides)


def build_encoder(config: ml_collections.ConfigDict) -> keras.Sequential:
  enc = config.encoder
  layers = [keras.Input(shape=(config.image_size, config.image_size, config.channels))]
  for filters, kernel, stride in zip(enc.filters, enc.kernel_sizes, enc.strides):
    layers += _block(keras.layers.Conv2D, filters, kernel, stride, enc, config.sync_batch_norm)
  # One dense layer gives mean and log-variance side by side.
  layers += [keras.layers.Flatten(), keras.layers.Dense(2 * config.latent_dim)]
  return keras.Sequential(layers, name="encoder")


def build_decoder(config: ml_collections.ConfigDict) -> keras.Sequential:
  dec = config.decoder
  size = decoder_initial_size(config)
  dense_act = None if dec.dense_activation == "none" else dec.dense_activation
  layers = [
      keras.Input(shape=(config.latent_dim,)),
      keras.layers.Dense(size * size * dec.initial_channels, activation=dense_act),
      keras.layers.Reshape((size, size, dec.initial_channels)),
  ]
  last = len(dec.filters) - 1
  for i, (filters, kernel, stride) in enumerate(zip(dec.filters, dec.kernel_sizes, dec.strides)):
    if i == last:
      # The output layer: logits (Bernoulli) or pre-sigmoid means (Gaussian), kept in float32
      # so the likelihood is computed at full precision under mixed precision.
      layers.append(
          keras.layers.Conv2DTranspose(
              filters, kernel, strides=stride, padding=dec.padding, dtype="float32"))
    else:
      layers += _block(keras.layers.Conv2DTranspose, filters, kernel, stride, dec,
                       config.sync_batch_norm)
  return keras.Sequential(layers, name="decoder")


class VAE(keras.Model):
  """Holds the encoder and decoder; the objective lives in objective.py."""

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(name="vae")
    self.latent_dim = config.latent_dim
    self.encoder = build_encoder(config)
    self.decoder = build_decoder(config)

  def encode(self, x, training=False):
    """Returns (mean, logvar) of q(z|x), each [batch, latent_dim], in float32."""
    h = tf.cast(self.encoder(x, training=training), tf.float32)
    mean, logvar = tf.split(h, 2, axis=-1)
    return mean, logvar

  def decode(self, z, training=False):
    """Returns the decoder's output layer (logits or pre-sigmoid means) in float32."""
    return tf.cast(self.decoder(z, training=training), tf.float32)

  def call(self, x, training=False):
    mean, _ = self.encode(x, training=training)
    return self.decode(mean, training=training)

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


class GlobalBatchNormalization(keras.layers.BatchNormalization):
  """BatchNormalization whose batch statistics are those of the global batch.

  Per-replica statistics would make training depend on how the global batch is split (1 replica
  of 16 normalises differently from 2 of 8) and let each replica's moving averages drift apart,
  while checkpoints keep only the first replica's. Here every replica normalises with the moments
  of the whole global batch, so all replicas compute the same moving statistics and the run is
  the same on 1, 2 or 64 replicas. The sum, the sum of squares and the count travel in ONE
  all-reduce per layer (Keras' synchronized=True sends three); its gradient is one more in the
  backward pass. With one replica the all-reduce is the identity, and the same formula runs.
  Variables and their names are BatchNormalization's, so checkpoints load either way.
  """

  def _moments(self, inputs, mask):
    if mask is not None:
      raise ValueError("GlobalBatchNormalization does not take a mask.")
    axes = self._reduction_axes
    count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(inputs), axes)), inputs.dtype)
    local = tf.concat([tf.reduce_sum(inputs, axis=axes),
                       tf.reduce_sum(tf.square(inputs), axis=axes),
                       count[None]], axis=0)
    ctx = tf.distribute.get_replica_context()
    total = local if ctx is None else ctx.all_reduce(tf.distribute.ReduceOp.SUM, local)
    channels = inputs.shape[self.axis]
    sums, squares, n = total[:channels], total[channels:2 * channels], total[-1]
    mean = sums / n
    # E[x^2] - E[x]^2 in float32 (Keras upcasts bfloat16/float16 inputs before this point).
    variance = tf.maximum(squares / n - tf.square(mean), 0.0)
    return mean, variance


def _block(conv_cls, filters, kernel, stride, stack):
  """A conv layer with its normalisation and activation, as a list of Keras layers.

  Without normalisation a plain activation is fused into the conv, which is how the tutorial
  writes its layers (same shapes, one layer each).
  """
  if stack.norm == "none" and stack.activation in ("relu", "none"):
    act = None if stack.activation == "none" else stack.activation
    return [conv_cls(filters, kernel, strides=stride, padding=stack.padding, activation=act)]
  if stack.norm == "batch":
    # No bias: BatchNorm subtracts the mean right after, so a bias would have a gradient of
    # exactly zero plus rounding noise, which Adam turns into steps of +-learning_rate.
    layers = [conv_cls(filters, kernel, strides=stride, padding=stack.padding, use_bias=False),
              GlobalBatchNormalization()]
  else:
    layers = [conv_cls(filters, kernel, strides=stride, padding=stack.padding)]
  act = _activation_layer(stack.activation)
  if act is not None:
    layers.append(act)
  return layers


def decoder_initial_size(config: ml_collections.ConfigDict) -> int:
  """Spatial size of the decoder's first feature map: image_size / prod(decoder strides)."""
  return config.image_size // math.prod(config.decoder.strides)


def build_encoder(config: ml_collections.ConfigDict) -> keras.Sequential:
  """Images [B, S, S, C] -> [B, 2 * latent_dim]: the mean and log-variance of q(z|x)."""
  enc = config.encoder
  layers = [keras.Input(shape=(config.image_size, config.image_size, config.channels))]
  for filters, kernel, stride in zip(enc.filters, enc.kernel_sizes, enc.strides):
    layers += _block(keras.layers.Conv2D, filters, kernel, stride, enc)
  # One dense layer gives mean and log-variance side by side.
  layers += [keras.layers.Flatten(), keras.layers.Dense(2 * config.latent_dim)]
  return keras.Sequential(layers, name="encoder")


def build_decoder(config: ml_collections.ConfigDict) -> keras.Sequential:
  """Latents [B, latent_dim] -> [B, S, S, C] logits (Bernoulli) or pre-sigmoid means."""
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
      layers += _block(keras.layers.Conv2DTranspose, filters, kernel, stride, dec)
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

"""The model family builds the recipes' layer shapes and parameter counts."""
from conftest import load_config
from vae_dist.model import networks


def _shapes(seq):
  return [tuple(layer.output.shape[1:]) for layer in seq.layers]


def test_mnist_config_is_the_tensorflow_cvae_tutorial():
  vae = networks.VAE(load_config("mnist"))
  # The tutorial's encoder: Conv2D(32, 3, 2, relu), Conv2D(64, 3, 2, relu), Flatten, Dense(4).
  assert _shapes(vae.encoder) == [(13, 13, 32), (6, 6, 64), (2304,), (4,)]
  assert [l.count_params() for l in vae.encoder.layers] == [320, 18496, 0, 9220]
  # Decoder: Dense(7*7*32, relu), Reshape, ConvT(64, s2), ConvT(32, s2), ConvT(1, s1).
  assert _shapes(vae.decoder) == [(1568,), (7, 7, 32), (14, 14, 64), (28, 28, 32), (28, 28, 1)]
  assert [l.count_params() for l in vae.decoder.layers] == [4704, 0, 18496, 18464, 289]
  assert vae.encoder.count_params() + vae.decoder.count_params() == 69989
  assert vae.encoder.layers[0].activation.__name__ == "relu"
  assert vae.decoder.layers[-1].activation.__name__ == "linear"  # Logits.


def test_fashion_mnist_recipe_shapes():
  vae = networks.VAE(load_config("fashion_mnist"))
  convs = [l for l in vae.encoder.layers if "conv" in l.name]
  assert [tuple(l.output.shape[1:]) for l in convs] == [(28, 28, 32), (14, 14, 64), (7, 7, 64),
                                                        (7, 7, 64)]
  assert sum("batch_normalization" in l.name for l in vae.encoder.layers) == 4
  assert vae.decoder.layers[0].output.shape[1:] == (3136,)
  assert vae.decoder.output_shape[1:] == (28, 28, 1)


def test_cartoon_recipe_and_its_smoke_variant():
  vae = networks.VAE(load_config("cartoon"))
  assert vae.encoder.output_shape[1:] == (400,)
  assert vae.decoder.layers[0].output.shape[1:] == (4096,)
  assert vae.decoder.layers[1].output.shape[1:] == (8, 8, 64)
  assert vae.decoder.output_shape[1:] == (256, 256, 3)
  smoke = networks.VAE(load_config("cartoon", "smoke"))
  assert smoke.decoder.output_shape[1:] == (32, 32, 3)

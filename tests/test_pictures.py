"""viz/pictures.py: enlargement, labels and where each image lands, without a model."""
import numpy as np
import pytest

from vae_dist.viz import pictures


def _images(n, size=28, channels=1, seed=0):
  return np.random.default_rng(seed).uniform(size=(n, size, size, channels)).astype(np.float32)


def test_small_images_are_enlarged_to_a_readable_size_and_stay_within_the_cap():
  assert pictures.enlargement(28, 28, rows=2, cols=8) == 3  # 84 pixels >= MIN_CELL.
  assert pictures.enlargement(64, 64, rows=2, cols=8) == 1
  # A 20 x 20 manifold of 28-pixel images at 3x would be 1680 wide: 2x keeps it under 1600.
  assert pictures.enlargement(28, 28, rows=20, cols=20) == 2
  picture = pictures.labelled_grid(_images(400), cols=20, pad=0)
  assert max(picture.pixels.shape[:2]) <= pictures.MAX_SIDE


def test_every_image_is_found_where_the_picture_says_it_is():
  images = _images(6, size=32, channels=3)
  picture = pictures.attribute(images[:2], images[2:].reshape(2, 2, 32, 32, 3), [-1.0, 1.0],
                               indices=[4, 9])
  assert picture.zoom == 2 and picture.pixels.shape[-1] == 3
  order = [images[0], images[2], images[3], images[1], images[4], images[5]]
  for i, want in enumerate(order):
    np.testing.assert_array_equal(picture.image(i), want)


def test_labels_are_drawn_in_the_bands_and_nowhere_else():
  picture = pictures.reconstructions(_images(3), _images(3, seed=1), indices=[0, 1, 2])
  top, left = picture.origin
  assert top > 0 and left > pictures.text_size("reconstruction")[0]
  pixels = picture.pixels[..., 0]
  assert (pixels[:top, left:] < 0.5).any()  # The column labels.
  assert (pixels[top:, :left] < 0.5).any()  # The row labels.
  assert (pixels[:top, :left] == 1.0).all()  # The corner stays white.


def test_mismatched_labels_are_refused():
  with pytest.raises(ValueError, match="3 column labels for 2 columns"):
    pictures.labelled_grid(_images(4), cols=2, col_labels=["a", "b", "c"])

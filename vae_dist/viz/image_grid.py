"""Tiles batches of images into one picture (for TensorBoard and PNG files)."""
import numpy as np


def tile(images, cols: int, pad: int = 1, pad_value: float = 1.0) -> np.ndarray:
  """[N, H, W, C] floats in [0, 1] -> [rows*(H+pad)-pad, cols*(W+pad)-pad, C], row-major."""
  images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
  n, h, w, c = images.shape
  rows = -(-n // cols)
  out = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, c), pad_value, np.float32)
  for i in range(n):
    r, q = divmod(i, cols)
    out[r * (h + pad):r * (h + pad) + h, q * (w + pad):q * (w + pad) + w] = images[i]
  return out


def side_by_side(originals, reconstructions, pad: int = 1) -> np.ndarray:
  """Each input above its reconstruction: a 2-row grid with N columns."""
  pairs = np.concatenate([np.asarray(originals), np.asarray(reconstructions)], axis=0)
  return tile(pairs, cols=len(originals), pad=pad)


def to_uint8(image) -> np.ndarray:
  return np.round(np.clip(np.asarray(image), 0.0, 1.0) * 255.0).astype(np.uint8)


def zoom(image, factor: int) -> np.ndarray:
  """Enlarges an [H, W, C] image by an integer factor (nearest neighbour: pixels stay sharp)."""
  factor = int(factor)
  if factor < 1:
    raise ValueError(f"zoom factor must be a positive integer, got {factor}")
  image = np.asarray(image)
  if factor == 1:
    return image
  return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def tiled_size(n: int, height: int, width: int, cols: int, pad: int = 1) -> tuple:
  """(height, width) of tile() for n images of height x width in `cols` columns."""
  rows = -(-n // cols)
  return rows * (height + pad) - pad, cols * (width + pad) - pad

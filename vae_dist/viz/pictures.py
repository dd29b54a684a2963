"""The pictures of a VAE's images, one recipe each, for TensorBoard and `generate` alike.

A 28x28 digit drawn at its own size is a speck in a browser or an image viewer, and a strip of
them with no words does not say which row is the input and which the reconstruction. So every
picture here is enlarged by an integer factor (nearest neighbour: pixels stay sharp squares) until
one image is at least MIN_CELL pixels high, as long as the picture stays within MAX_SIDE pixels,
and its rows and columns carry labels when they mean something (original / reconstruction, the
interpolation's t, the attribute's alpha, the manifold's latent values).

Every function takes images as floats in [0, 1], [N, H, W, C] with C = 1 or 3, and returns a
Picture: its pixels [height, width, C] as floats in [0, 1], and where each image is in it.
"""
import dataclasses
import functools
import math
from typing import Optional, Sequence

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

from vae_dist.viz import image_grid

MIN_CELL = 64  # Pixels an image is enlarged to, at least (28 -> 84, 32 -> 64, 64 -> 64).
MAX_SIDE = 1600  # ... unless the picture would be wider or higher than this.
FONT_SIZE = 12
_PAD = 2  # White pixels between enlarged images.
_MARGIN = 4  # Around a label.


@functools.lru_cache(maxsize=None)
def _font():
  try:
    return ImageFont.load_default(size=FONT_SIZE)  # Pillow's own scalable font (FreeType).
  except (TypeError, ValueError, OSError, ImportError):
    return ImageFont.load_default()  # Without FreeType: the fixed bitmap font.


def text_size(text: str) -> tuple:
  """(width, height) in pixels of `text` in the label font."""
  left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox(
      (0, 0), text, font=_font())
  return right - min(left, 0), bottom - min(top, 0)


def enlargement(height: int, width: int, rows: int, cols: int, extra: int = 0) -> int:
  """The integer factor for images of height x width in a rows x cols grid (see MIN_CELL)."""
  want = max(1, math.ceil(MIN_CELL / max(1, min(height, width))))
  while want > 1 and max(rows * (height * want + _PAD), cols * (width * want + _PAD)) + extra > \
      MAX_SIDE:
    want -= 1
  return want


@dataclasses.dataclass(frozen=True)
class Picture:
  """A picture and where its images are in it.

  pixels: [height, width, C] floats in [0, 1].
  zoom: the enlargement of each image.
  origin: (top, left) pixel of the first image (after the labels).
  cell: (height, width) of one enlarged image.
  pad: pixels between images.
  cols: images per row.
  """
  pixels: np.ndarray
  zoom: int
  origin: tuple
  cell: tuple
  pad: int
  cols: int

  def image(self, index: int) -> np.ndarray:
    """Image `index` (row-major) as it was given, at its own size (every zoom-th pixel)."""
    r, q = divmod(index, self.cols)
    top = self.origin[0] + r * (self.cell[0] + self.pad)
    left = self.origin[1] + q * (self.cell[1] + self.pad)
    box = self.pixels[top:top + self.cell[0], left:left + self.cell[1]]
    return box[::self.zoom, ::self.zoom]


def labelled_grid(images, cols: int, *, row_labels: Optional[Sequence[str]] = None,
                  col_labels: Optional[Sequence[str]] = None, zoom: Optional[int] = None,
                  pad: int = _PAD) -> Picture:
  """Images in a grid of `cols` columns, enlarged, with labels left of rows and above columns.

  Args:
    images: [N, H, W, C] floats in [0, 1], row-major.
    cols: images per row.
    row_labels: one label per row (drawn left of it), or None.
    col_labels: one label per column (drawn above it), or None.
    zoom: the enlargement; None chooses it (see enlargement()).
    pad: pixels between images, after enlargement.
  """
  images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
  n, h, w, c = images.shape
  rows = -(-n // cols)
  if row_labels is not None and len(row_labels) != rows:
    raise ValueError(f"{len(row_labels)} row labels for {rows} rows")
  if col_labels is not None and len(col_labels) != cols:
    raise ValueError(f"{len(col_labels)} column labels for {cols} columns")
  left = (max(text_size(t)[0] for t in row_labels) + 2 * _MARGIN) if row_labels else 0
  top = (max(text_size(t)[1] for t in col_labels) + 2 * _MARGIN) if col_labels else 0
  if zoom is None:
    zoom = enlargement(h, w, rows, cols, extra=max(left, top))
  ch, cw = h * zoom, w * zoom
  grid = image_grid.tile(
      np.stack([image_grid.zoom(im, zoom) for im in images]) if zoom > 1 else images, cols=cols,
      pad=pad)
  picture = functools.partial(Picture, zoom=zoom, origin=(top, left), cell=(ch, cw), pad=pad,
                              cols=cols)
  if not left and not top:
    return picture(pixels=grid)
  mode = "L" if c == 1 else "RGB"
  canvas = Image.new(mode, (left + grid.shape[1], top + grid.shape[0]), "white")
  pixels = image_grid.to_uint8(grid)
  canvas.paste(Image.fromarray(pixels[..., 0] if c == 1 else pixels, mode), (left, top))
  draw = ImageDraw.Draw(canvas)
  for r, text in enumerate(row_labels or ()):
    tw, th = text_size(text)
    draw.text((left - _MARGIN - tw, top + r * (ch + pad) + (ch - th) // 2), text, fill="black",
              font=_font())
  for q, text in enumerate(col_labels or ()):
    tw, _ = text_size(text)
    draw.text((left + q * (cw + pad) + (cw - tw) // 2, _MARGIN), text, fill="black",
              font=_font())
  out = np.asarray(canvas, np.float32) / 255.0
  # The images themselves are pasted back as they were: the 8-bit canvas must not round them.
  out = out[..., None] if c == 1 else out
  out[top:, left:] = grid
  return picture(pixels=out)


def samples(images) -> Picture:
  """Decoded samples in a square-ish grid, enlarged."""
  return labelled_grid(images, cols=math.ceil(math.sqrt(len(images))))


def reconstructions(originals, reconstructed,
                    indices: Optional[Sequence[int]] = None) -> Picture:
  """Each test image above its reconstruction; rows labelled, columns by test index."""
  pairs = np.concatenate([np.asarray(originals), np.asarray(reconstructed)], axis=0)
  cols = len(originals)
  return labelled_grid(pairs, cols, row_labels=["original", "reconstruction"],
                       col_labels=None if indices is None else [f"#{i}" for i in indices])


def interpolation(start, path, end, ts: Sequence[float],
                  ends: Optional[Sequence[int]] = None) -> Picture:
  """Test image A, decodes of the latent path at each t, test image B: one labelled row."""
  row = np.concatenate([np.asarray(start)[None], np.asarray(path), np.asarray(end)[None]])
  a, b = ("A", "B") if ends is None else (f"#{ends[0]}", f"#{ends[1]}")
  labels = [a] + [f"t={t:.2f}" for t in ts] + [b]
  return labelled_grid(row, cols=len(row), col_labels=labels)


def attribute(originals, shifted, alphas: Sequence[float],
              indices: Optional[Sequence[int]] = None) -> Picture:
  """Per test image (a row): the image, then decodes of z + alpha * v for each alpha."""
  originals, shifted = np.asarray(originals), np.asarray(shifted)
  rows = np.concatenate([originals[:, None], shifted], axis=1)
  cols = 1 + len(alphas)
  return labelled_grid(
      rows.reshape(-1, *rows.shape[2:]), cols,
      row_labels=None if indices is None else [f"#{i}" for i in indices],
      col_labels=["original"] + [f"alpha {a:+g}" for a in alphas])


def manifold(images, grid: int, col_values: Sequence[float],
             row_values: Optional[Sequence[float]] = None, dims=(0, 1)) -> Picture:
  """The decoded latent grid, no gaps: columns labelled by their z[dims[0]], rows by their
  z[dims[1]] (a 1-D latent space is one row, row_values None)."""
  return labelled_grid(
      images, cols=grid, pad=0,
      row_labels=None if row_values is None else [f"z{dims[1]}={v:.1f}" for v in row_values],
      col_labels=[f"z{dims[0]}={v:.1f}" if i == 0 else f"{v:.1f}"
                  for i, v in enumerate(col_values)])

"""PNG and animated GIF files from image arrays, written atomically (local paths and gs://)."""
import io
from typing import Sequence

from PIL import Image
from PIL import ImageDraw

from vae_dist import fileio
from vae_dist.viz import image_grid


def to_pil(image) -> Image.Image:
  """[H, W, 1 or 3] floats in [0, 1] -> a grayscale or RGB PIL image."""
  pixels = image_grid.to_uint8(image)
  if pixels.ndim == 3 and pixels.shape[-1] == 1:
    return Image.fromarray(pixels[..., 0], "L")
  return Image.fromarray(pixels, "RGB")


def write_png(path: str, image) -> tuple:
  """Writes an [H, W, C] float image in [0, 1] as PNG; returns its (width, height)."""
  buffer = io.BytesIO()
  to_pil(image).save(buffer, format="PNG")
  fileio.write_bytes_atomic(path, buffer.getvalue())
  return image.shape[1], image.shape[0]


def with_caption(image: Image.Image, text: str, height: int = 12) -> Image.Image:
  """The image below a white band of `height` pixels holding `text` in black."""
  out = Image.new(image.mode, (image.width, image.height + height), "white")
  out.paste(image, (0, height))
  ImageDraw.Draw(out).text((2, 0), text, fill="black")
  return out


def write_gif(path: str, frames: Sequence[Image.Image], duration_ms: int = 500) -> None:
  """An animated GIF that loops forever, one frame per image (all of the same size)."""
  if not frames:
    raise ValueError("a GIF needs at least one frame")
  buffer = io.BytesIO()
  # optimize=False: Pillow must not drop or merge frames, one frame per image is the contract.
  frames[0].save(buffer, format="GIF", save_all=True, append_images=list(frames[1:]),
                 duration=int(duration_ms), loop=0, optimize=False)
  fileio.write_bytes_atomic(path, buffer.getvalue())

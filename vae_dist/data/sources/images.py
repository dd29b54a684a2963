"""Reading image files for the prepared data sets: validation, RGB conversion, PNG encoding.

Every stored 'image' of Cartoon Set and image folders is RGB, whatever the source file was
(grayscale, RGB, RGBA, palette, 16 bit), so one data set has one channel count; the input
pipeline converts to config.channels later. Transparent pixels are composited on white, which is
what the images look like in a viewer.
"""
import collections
import concurrent.futures
import io
import os
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np
from PIL import Image

_In = TypeVar("_In")
_Out = TypeVar("_Out")

WHITE = (255, 255, 255, 255)

# Errors PIL raises for files that are not images, truncated or otherwise broken.
_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError,
               Image.DecompressionBombError)


class UnreadableImageError(Exception):
  """The bytes are not a readable image; the message says why."""


def decode(data: bytes) -> Image.Image:
  """Decodes image bytes completely (so truncated files fail here, not later in TensorFlow).

  Args:
    data: the encoded file contents.

  Returns:
    The loaded PIL image, in its own mode.

  Raises:
    UnreadableImageError: the data is not a complete, readable image.
  """
  try:
    image = Image.open(io.BytesIO(data))
    image.load()
  except _PIL_ERRORS as e:
    reason = str(e).strip() or type(e).__name__
    raise UnreadableImageError(reason) from None
  return image


def has_alpha(image: Image.Image) -> bool:
  """True when some pixels may be (partly) transparent."""
  return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def to_rgb(image: Image.Image) -> Image.Image:
  """Converts any PIL image to 8-bit RGB, compositing transparency on white.

  Args:
    image: a loaded PIL image of any mode.

  Returns:
    An RGB image of the same size.
  """
  if image.mode.startswith("I"):
    # 16- and 32-bit grayscale: PIL's convert() clips at 255 instead of scaling.
    pixels = np.asarray(image, dtype=np.float64) / 257.0
    image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="L")
  elif image.mode == "F":
    pixels = np.asarray(image, dtype=np.float64)
    image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="L")
  if has_alpha(image):
    background = Image.new("RGBA", image.size, WHITE)
    return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
  return image.convert("RGB")


def png_bytes(image: Image.Image) -> bytes:
  """Encodes an image as PNG."""
  buffer = io.BytesIO()
  image.save(buffer, format="PNG")
  return buffer.getvalue()


def rgb_png(data: bytes) -> bytes:
  """Decodes image bytes and re-encodes them as an RGB PNG.

  Raises:
    UnreadableImageError: the data is not a complete, readable image.
  """
  return png_bytes(to_rgb(decode(data)))


def rgb_feature_bytes(data: bytes) -> bytes:
  """Bytes for an RGB tfds.features.Image: the file itself when TensorFlow decodes it right.

  JPEG and PNG files without transparency decode to the same RGB pixels with
  tf.image.decode_image(channels=3), so they are stored as they are (JPEGs would grow several
  times as PNGs); everything else is converted with `to_rgb` and stored as PNG.

  Args:
    data: the encoded file contents.

  Returns:
    Encoded image bytes that decode to RGB.

  Raises:
    UnreadableImageError: the data is not a complete, readable image.
  """
  image = decode(data)
  if image.format in ("JPEG", "PNG") and image.mode in ("L", "RGB") and not has_alpha(image):
    return data
  return png_bytes(to_rgb(image))


def default_num_threads() -> int:
  """Threads for image work: one per core this process may use (its CPU affinity), up to 64.

  PIL and zlib release the GIL while decoding, compositing and encoding, which is nearly all of
  the ~10 ms an image costs, so threads scale with cores (BUILD_NOTES: preparation vs cores).
  """
  try:
    cores = len(os.sched_getaffinity(0))
  except AttributeError:  # Not on Linux.
    cores = os.cpu_count() or 1
  return max(1, min(64, cores))


def ordered_map(fn: Callable[[_In], _Out], items: Iterable[_In], num_threads: int = 0,
                window: int = 64) -> Iterator[_Out]:
  """Yields fn(item) for each item, in order, computed by a thread pool.

  At most `window` items are in flight, so memory stays bounded for data sets of any size.

  Args:
    fn: the function to apply; its exceptions are raised to the caller in order.
    items: the inputs, consumed lazily.
    num_threads: pool size; 0 means `default_num_threads()`.
    window: the most results computed ahead of the consumer.

  Yields:
    The results, in the order of `items`.
  """
  num_threads = num_threads or default_num_threads()
  window = max(window, 4 * num_threads)  # Enough work in flight to keep every thread busy.
  if num_threads == 1:
    yield from map(fn, items)
    return
  with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
    pending = collections.deque()
    try:
      for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
          yield pending.popleft().result()
      while pending:
        yield pending.popleft().result()
    finally:
      for future in pending:  # The consumer stopped early: drop the work not started yet.
        future.cancel()

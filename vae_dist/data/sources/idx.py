"""Reading MNIST-style IDX files (gzip-compressed or raw), with the checks TFDS leaves out.

Format (http://yann.lecun.com/exdb/mnist/): a big-endian header, two zero bytes, a type byte
(0x08 = unsigned byte), the number of dimensions, then one 4-byte size per dimension, then the
data. Images files have 3 dimensions (count, rows, columns), labels files 1 (count).
"""
import gzip
import zlib

import numpy as np
import tensorflow as tf

from vae_dist import errors

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
_GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path: str) -> bytes:
  """Returns the file's contents, decompressed when it is gzip (judged by content, not name).

  Raises:
    DataError: the file cannot be read or its gzip stream is damaged.
  """
  try:
    with tf.io.gfile.GFile(path, "rb") as f:
      data = f.read()
  except (tf.errors.OpError, OSError) as e:
    raise errors.DataError(f"Cannot read IDX file {path}: {e}") from None
  if data[:2] != _GZIP_MAGIC:
    return data
  try:
    return gzip.decompress(data)
  except (OSError, EOFError, zlib.error) as e:
    raise errors.DataError(
        f"IDX file {path} is a damaged or truncated gzip file ({e}); download it again."
    ) from None


def parse(data: bytes, path: str, magic: int) -> np.ndarray:
  """Parses IDX bytes into an array of the shape in its header.

  Args:
    data: the decompressed file contents.
    path: the file's name, for error messages.
    magic: IMAGES_MAGIC or LABELS_MAGIC, the header the file must start with.

  Returns:
    A uint8 array of shape (count,) or (count, rows, columns).

  Raises:
    DataError: wrong header, or data shorter or longer than the header says.
  """
  kind = "images" if magic == IMAGES_MAGIC else "labels"
  if len(data) < 4 or int.from_bytes(data[:4], "big") != magic:
    found = data[:4].hex() if len(data) >= 4 else "(file shorter than 4 bytes)"
    raise errors.DataError(
        f"IDX file {path} is not an MNIST {kind} file: magic number {found}, expected "
        f"{magic:08x}. Check that the file names match their contents.")
  ndim = data[3]
  header_size = 4 + 4 * ndim
  if len(data) < header_size:
    raise errors.DataError(f"IDX file {path} is truncated inside its header.")
  shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  expected = header_size + int(np.prod(shape, dtype=np.int64))
  if len(data) != expected:
    state = "truncated" if len(data) < expected else "longer than its header says"
    raise errors.DataError(
        f"IDX file {path} is {state}: the header says {shape} values ({expected} bytes in all), "
        f"the file has {len(data)} bytes. Download it again.")
  return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


def read_images(path: str, rows: int = 28, columns: int = 28) -> np.ndarray:
  """Reads an images file into a (count, rows, columns, 1) uint8 array.

  Raises:
    DataError: the file is unreadable, not an images file, or of another image size.
  """
  images = parse(read_bytes(path), path, IMAGES_MAGIC)
  if images.shape[1:] != (rows, columns):
    raise errors.DataError(
        f"IDX file {path} holds {images.shape[1]}x{images.shape[2]} images, expected "
        f"{rows}x{columns}.")
  return images[..., np.newaxis]


def read_labels(path: str, num_classes: int = 10) -> np.ndarray:
  """Reads a labels file into a (count,) int64 array.

  Raises:
    DataError: the file is unreadable, not a labels file, or has a label >= num_classes.
  """
  labels = parse(read_bytes(path), path, LABELS_MAGIC)
  if labels.size and int(labels.max()) >= num_classes:
    raise errors.DataError(
        f"IDX file {path} has label {int(labels.max())}; labels must be below {num_classes}.")
  return labels.astype(np.int64)


def read_pair(images_path: str, labels_path: str, num_classes: int = 10):
  """Reads matching images and labels files.

  Returns:
    (images, labels): (count, 28, 28, 1) uint8 and (count,) int64.

  Raises:
    DataError: either file is bad, the counts differ or the files are empty.
  """
  images = read_images(images_path)
  labels = read_labels(labels_path, num_classes)
  if len(images) != len(labels):
    raise errors.DataError(
        f"IDX files do not match: {images_path} has {len(images)} images but {labels_path} "
        f"has {len(labels)} labels.")
  if not len(images):
    raise errors.DataError(f"IDX file {images_path} holds no images.")
  return images, labels

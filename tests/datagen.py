"""Writers of small test data in the real on-disk formats, for the data set and end-to-end tests.

  write_idx_dataset     MNIST/Fashion-MNIST IDX files (gzip or raw) with the official names.
  write_cartoon_archive Google's Cartoon Set layout: cartoonset10k.tgz (or the extracted folder)
                        of RGBA csNNNN.png with csNNNN.csv attribute files.
  write_image_folder    a folder tree of PNG and JPEG files (grayscale, RGB, RGBA), optionally
                        with corrupt files.
  mock_catalog          tfds.testing.mock_data for a catalog data set, with split sizes, so that
                        vae_dist.data.sources.load_builder treats it as prepared.

Each returns what it wrote, so tests can check the data that comes back.
"""
import contextlib
import gzip as gzip_lib
import io
import os
import tarfile

import numpy as np
from PIL import Image

from vae_dist.data.sources import cartoon_set

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
  """Encodes a uint8 array in the IDX format (big-endian header, then the values)."""
  header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
  return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx_dataset(directory, num_train: int, num_test: int, seed: int = 0,
                      gzip: bool = True) -> dict:
  """Writes the four MNIST IDX files: train-images-idx3-ubyte[.gz], t10k-labels-... and so on.

  Args:
    directory: the folder to write into (created if needed).
    num_train: images in the train files.
    num_test: images in the t10k (test) files.
    seed: seed of the random images and labels.
    gzip: write .gz files, as downloaded, or raw files.

  Returns:
    {'train': (images (n, 28, 28) uint8, labels (n,) int), 'test': (...), 'paths': {split:
    (images path, labels path)}}.
  """
  os.makedirs(directory, exist_ok=True)
  rng = np.random.default_rng(seed)
  out = {"paths": {}}
  for split, count in (("train", num_train), ("test", num_test)):
    images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
    images[:, :4] = 0  # A little structure, like the real digits' empty border.
    labels = rng.integers(0, 10, size=(count,), dtype=np.uint8)
    paths = []
    for base, array, magic in ((IDX_FILES[split][0], images, 0x803),
                               (IDX_FILES[split][1], labels, 0x801)):
      data = idx_bytes(array, magic)
      path = os.path.join(directory, base + (".gz" if gzip else ""))
      with open(path, "wb") as f:
        f.write(gzip_lib.compress(data, mtime=0) if gzip else data)
      paths.append(path)
    out[split] = (images, labels.astype(np.int64))
    out["paths"][split] = tuple(paths)
  return out


def cartoon_attributes(index: int) -> dict:
  """Deterministic, valid attribute values for the index-th test cartoon."""
  return {name: (index * 7 + i) % n for i, (name, n) in enumerate(cartoon_set.ATTRIBUTES.items())}


def cartoon_csv(attributes: dict) -> str:
  """A csNNNN.csv in the real format: `"name", variant, num_variants` per line."""
  return "".join(f'"{name}", {attributes[name]}, {cartoon_set.ATTRIBUTES[name]}\n'
                 for name in cartoon_set.ATTRIBUTES)


def cartoon_png(attributes: dict, size: int) -> tuple[bytes, tuple]:
  """An RGBA cartoon: transparent (black, alpha 0) around an opaque square of one colour.

  Returns:
    (png bytes, the square's RGB colour).
  """
  colour = (40 + 20 * attributes["hair_color"], 30 + 20 * attributes["face_color"],
            50 + 40 * attributes["eye_color"])
  pixels = np.zeros((size, size, 4), np.uint8)  # Transparent black: must come out white.
  q = size // 4
  pixels[q:size - q, q:size - q, :3] = colour
  pixels[q:size - q, q:size - q, 3] = 255
  buffer = io.BytesIO()
  Image.fromarray(pixels, "RGBA").save(buffer, format="PNG")
  return buffer.getvalue(), colour


def write_cartoon_archive(directory, n: int, *, config: str = "10k", size: int = 40,
                          extracted: bool = False, corrupt: int = 0,
                          start_id: int = 1000) -> dict:
  """Writes a small Cartoon Set in the layout of Google's archives.

  cartoonset10k.tgz holds cartoonset10k/csNNNN.png and .csv; cartoonset100k.tgz spreads them over
  cartoonset100k/0 .. /9. With extracted=True the folder is written instead of the archive.

  Args:
    directory: the manual dir to write into.
    n: number of cartoons (readable ones; corrupt ones come on top).
    config: '10k' or '100k' (which archive and layout).
    size: image side in pixels (the real images are 500).
    extracted: write the extracted folder instead of the .tgz.
    corrupt: number of extra cartoons whose PNG is truncated (their CSV is fine).
    start_id: first csNNNN number.

  Returns:
    {'path': archive or folder, 'examples': {key: {'attributes', 'colour'}}, 'corrupt': [keys]}
    where key is the path inside the set without extension, e.g. 'cs1000' or '3/cs1003'.
  """
  archive = cartoon_set.CONFIGS[config].archive
  files, examples, broken = {}, {}, []
  for i in range(n + corrupt):
    number = start_id + i
    key = f"cs{number}" if config == "10k" else f"{number % 10}/cs{number}"
    attributes = cartoon_attributes(i)
    png, colour = cartoon_png(attributes, size)
    if i >= n:
      png = png[:len(png) // 2]
      broken.append(key)
    else:
      examples[key] = {"attributes": attributes, "colour": colour}
    files[f"{archive}/{key}.png"] = png
    files[f"{archive}/{key}.csv"] = cartoon_csv(attributes).encode()
  os.makedirs(directory, exist_ok=True)
  if extracted:
    for name, data in files.items():
      path = os.path.join(directory, name)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, "wb") as f:
        f.write(data)
    path = os.path.join(directory, archive)
  else:
    path = os.path.join(directory, archive + ".tgz")
    with tarfile.open(path, "w:gz") as tar:
      for name, data in files.items():
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
  return {"path": path, "examples": examples, "corrupt": broken}


_KINDS = ("L.png", "RGB.png", "RGBA.png", "L.jpg", "RGB.jpg")


def image_file(kind: str, size: tuple, seed: int) -> bytes:
  """Encodes a random image: kind is '<PIL mode>.<png|jpg>', e.g. 'RGBA.png'."""
  mode, ext = kind.split(".")
  rng = np.random.default_rng(seed)
  height, width = size
  channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
  pixels = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
  if mode == "RGBA":
    pixels[..., 3] = 255
    pixels[: height // 2, :, 3] = 0  # Top half transparent.
  image = Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode)
  buffer = io.BytesIO()
  image.save(buffer, format="PNG" if ext == "png" else "JPEG", quality=90)
  return buffer.getvalue()


def write_image_folder(directory, *, classes=("cats", "dogs"), per_class: int = 5,
                       size=(24, 20), corrupt: int = 0, nested: bool = True,
                       seed: int = 0) -> dict:
  """Writes a folder of PNG and JPEG images of mixed modes (grayscale, RGB, RGBA).

  Args:
    directory: the root folder (created).
    classes: subfolder names (become labels); () writes every image at the root (no labels).
    per_class: readable images per class (or in all, when classes is ()).
    size: (height, width) of the images; every other image is one pixel wider, so sizes vary.
    corrupt: number of extra unreadable files (truncated PNG or JPEG), in the first class.
    nested: put every second image of a class one folder deeper (classes still come from the
      top-level subfolder).
    seed: seed of the pixels.

  Returns:
    {'root': directory, 'files': {relative path: label or None}, 'corrupt': [relative paths]}.
  """
  files, broken = {}, []
  groups = list(classes) or [None]
  for c, label in enumerate(groups):
    for i in range(per_class):
      kind = _KINDS[(c + i) % len(_KINDS)]
      subdir = [label] if label else []
      if nested and i % 2:
        subdir.append("more")
      name = f"img_{c}_{i}_{kind.replace('.', '_')}.{kind.split('.')[1]}"
      relative = os.path.join(*subdir, name)
      height, width = size
      data = image_file(kind, (height, width + i % 2), seed * 1000 + c * 100 + i)
      _write(directory, relative, data)
      files[relative] = label
  for j in range(corrupt):
    kind = _KINDS[j % 2 + 1]  # RGB.png, RGBA.png: truncated PNGs.
    if j % 3 == 2:
      kind = "RGB.jpg"
    data = image_file(kind, size, seed + 99 + j)
    relative = os.path.join(*([groups[0]] if groups[0] else []),
                            f"broken_{j}.{kind.split('.')[1]}")
    _write(directory, relative, data[: len(data) // 2])
    broken.append(relative)
  return {"root": str(directory), "files": files, "corrupt": broken}


def _write(root, relative: str, data: bytes) -> None:
  path = os.path.join(root, relative)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(data)


@contextlib.contextmanager
def mock_catalog(name: str, metadata_dir, num_examples: int = 8,
                 splits=("train", "test"), config: str = ""):
  """tfds.testing.mock_data for catalog data set `name`, looking prepared to load_builder.

  Writes the data set's metadata (dataset_info.json with `num_examples` per split, features)
  into metadata_dir, then mocks TFDS so every builder reads from there and as_dataset yields
  `num_examples` random examples of the right shapes.

  Args:
    name: a TFDS catalog name, e.g. 'cifar10' or 'celeb_a'.
    metadata_dir: a scratch folder (tmp_path).
    num_examples: examples per split.
    splits: split names to declare.
    config: builder config name, '' for the default.

  Yields:
    metadata_dir, as a string.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  metadata_dir = str(metadata_dir)
  builder = tfds.builder(name, config=config or None, data_dir=metadata_dir)
  split_infos = [
      tfds.core.SplitInfo(
          name=split, shard_lengths=[num_examples], num_bytes=0,
          filename_template=tfds.core.ShardedFileTemplate(
              data_dir=str(builder.data_path), dataset_name=builder.name, split=split,
              filetype_suffix="tfrecord"))
      for split in splits
  ]
  builder.info.set_splits(tfds.core.SplitDict(split_infos))
  builder.data_path.mkdir(parents=True, exist_ok=True)
  builder.info.write_to_directory(builder.data_path)
  with tfds.testing.mock_data(num_examples=num_examples, data_dir=metadata_dir,
                              policy=tfds.testing.MockPolicy.USE_FILES):
    yield metadata_dir

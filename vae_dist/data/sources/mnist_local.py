"""MNIST and Fashion-MNIST prepared offline from local IDX files, identical to TFDS' own.

The catalog builders download the four IDX files and write the data set `mnist` (or
`fashion_mnist`) 3.0.1. When the data is not prepared yet and the files are on disk (in
config.manual_dir, or for Fashion-MNIST where Debian's `dataset-fashion-mnist` package puts them),
the subclasses here write the same data set from them: same name, version, features, splits,
example keys (the index in the file) and encoded records, so a run shuffles and trains the same
whichever way the records were made, and later runs load them with the catalog builder. The
split sizes are the counts in the IDX headers, so small test files make small, consistent splits.
Only when no local files are found is TFDS' download tried (after a quick reachability probe).
"""
import hashlib
from typing import Mapping

from absl import logging
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.image_classification import mnist as tfds_mnist

from vae_dist import errors
from vae_dist.data.sources import catalog
from vae_dist.data.sources import common
from vae_dist.data.sources import idx

NAMES = ("mnist", "fashion_mnist")
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_FASHION_DIR = "/usr/share/datasets/fashion-mnist"

# split -> (images file, labels file), the names of the official downloads without '.gz'.
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# SHA-256 of the official labels files, as downloaded (.gz) and decompressed. Labels files are
# small, so hashing them is free, and catches a manual_dir holding the other data set's files.
_KNOWN_LABELS_FILES = {
    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c": "mnist",
    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6": "mnist",
    "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845": "fashion_mnist",
    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5": "fashion_mnist",
    "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9": "fashion_mnist",
    "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34": "fashion_mnist",
}


class _LocalIdxMixin:
  """Split generators reading local IDX files instead of downloading them."""

  def __init__(self, *, idx_files: Mapping[str, tuple[str, str]], **kwargs):
    """Args: idx_files: split -> (images path, labels path); others go to DatasetBuilder."""
    self._idx_files = dict(idx_files)
    super().__init__(**kwargs)

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {split: self._generate_examples(images_path=images, labels_path=labels)
            for split, (images, labels) in self._idx_files.items()}

  def _generate_examples(self, images_path, labels_path):  # pylint: disable=arguments-differ
    images, labels = idx.read_pair(images_path, labels_path)
    # Same keys and records as the catalog builder: the position in the file, the 28x28x1 array.
    for index, (image, label) in enumerate(zip(images, labels)):
      yield index, {"image": image, "label": label}


class LocalMnist(_LocalIdxMixin, tfds_mnist.MNIST, skip_registration=True):
  """TFDS `mnist` 3.0.1 written from local IDX files."""

  name = "mnist"


class LocalFashionMnist(_LocalIdxMixin, tfds_mnist.FashionMNIST, skip_registration=True):
  """TFDS `fashion_mnist` 3.0.1 written from local IDX files."""

  name = "fashion_mnist"


_LOCAL_BUILDERS = {"mnist": LocalMnist, "fashion_mnist": LocalFashionMnist}


def candidate_dirs(name: str, manual_dir: str, data_dir_root: str) -> list[str]:
  """The folders searched for the IDX files, in order."""
  base = manual_dir or common.default_manual_dir(data_dir_root)
  dirs = [base, common.join(base, name)]
  if "_" in name:
    dirs.append(common.join(base, name.replace("_", "-")))  # fashion-mnist, as Debian names it
  if name == "fashion_mnist":
    dirs.append(DEBIAN_FASHION_DIR)
  return dirs


def find_files(directory: str):
  """Looks for the four IDX files (each gzip or raw) in one folder.

  Returns:
    (files, note): files maps split -> (images path, labels path), or is None when some are
    missing; note says what was found, for the error message.
  """
  if not common.is_dir(directory):
    return None, f"{directory}: no such folder"
  found, missing = {}, []
  for base in [b for pair in FILES.values() for b in pair]:
    for candidate in (base + ".gz", base):
      if common.is_file(common.join(directory, candidate)):
        found[base] = common.join(directory, candidate)
        break
    else:
      missing.append(base + "[.gz]")
  if missing:
    return None, f"{directory}: missing {', '.join(missing)}"
  files = {split: (found[images], found[labels]) for split, (images, labels) in FILES.items()}
  return files, f"{directory}: found the four IDX files"


def check_identity(name: str, files: Mapping[str, tuple[str, str]]) -> None:
  """Refuses files recognisably from the other data set (they would be cached under `name`).

  Raises:
    DataError: a labels file is the official file of the other data set.
  """
  for _, labels_path in files.values():
    with tf.io.gfile.GFile(labels_path, "rb") as f:
      raw = f.read()
    contents = idx.read_bytes(labels_path)  # Decompressed, when gzip.
    digests = {hashlib.sha256(raw).hexdigest(), hashlib.sha256(contents).hexdigest()}
    owners = {_KNOWN_LABELS_FILES[d] for d in digests if d in _KNOWN_LABELS_FILES}
    if owners and name not in owners:
      raise errors.DataError(
          f"{labels_path} is the {owners.pop()} labels file, but config.dataset is '{name}'. "
          f"Point config.manual_dir at a folder holding {name}'s IDX files.")


def _ways(name: str, manual_dir: str) -> list[str]:
  url = _LOCAL_BUILDERS[name].URL
  names = ", ".join(b + ".gz" for pair in FILES.values() for b in pair)
  ways = []
  if name == "fashion_mnist":
    ways.append(f"`apt-get install {DEBIAN_PACKAGE}` (Debian/Ubuntu) installs the IDX files in "
                f"{DEBIAN_FASHION_DIR}, where they are found without further setting")
  ways.append(f"download {names} from {url} into a folder and set config.manual_dir to it "
              f"(now {manual_dir or 'unset'}; gzip or uncompressed files both work)")
  return ways


def load(name: str, data_dir: str, manual_dir: str) -> tfds.core.DatasetBuilder:
  """Returns the prepared `mnist` or `fashion_mnist` builder, preparing it if needed.

  Order: an already prepared data set; local IDX files; TFDS' download.

  Args:
    name: 'mnist' or 'fashion_mnist'.
    data_dir: the TFDS data dir ('' for TFDS' default).
    manual_dir: config.manual_dir ('' for TFDS' default manual folder).

  Raises:
    DataError: the data is nowhere to be found, or the local files are bad.
  """
  builder = catalog.make_builder(name, "", data_dir)
  if builder.is_prepared():
    return builder
  looked = []
  for directory in candidate_dirs(name, manual_dir, builder.data_dir_root):
    files, note = find_files(directory)
    looked.append(note)
    if files:
      prepare_from_files(name, files, data_dir)
      return catalog.make_builder(name, "", data_dir)
  catalog.download_and_prepare(builder, manual_dir, looked, _ways(name, manual_dir))
  return builder


def prepare_from_files(name: str, files: Mapping[str, tuple[str, str]], data_dir: str) -> None:
  """Writes TFDS `name` into data_dir from local IDX files.

  Raises:
    DataError: the files are bad (wrong data set, magic numbers, counts, truncated).
  """
  check_identity(name, files)
  builder = _LOCAL_BUILDERS[name](idx_files=files, data_dir=data_dir or None)
  logging.info("Preparing %s %s in %s from local IDX files: %s", name, builder.version,
               builder.data_path, sorted(p for pair in files.values() for p in pair))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))

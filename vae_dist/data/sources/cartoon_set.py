"""Google's Cartoon Set as a TFDS data set, prepared from the archives downloaded by hand.

Cartoon Set (https://google.github.io/cartoonset/) is not in the TFDS catalog. Its two archives,
cartoonset10k.tgz and cartoonset100k.tgz, hold csNNNN.png (500x500 RGBA) images, each with a
csNNNN.csv of attributes, one line per attribute: `"eye_angle", 1, 3` = name, variant, number of
variants (the 100k archive spreads them over subfolders 0..9). This builder reads the archives
(or their extracted folders) from the manual dir and writes:

  image:      RGB, transparent pixels composited on white;
  attributes: a ClassLabel per attribute, with the number of variants the CSVs give;
  filename:   the image's path inside the set, e.g. 'cs1234.png' or '3/cs1234.png'.

The set has no official split: 'test' is the 10% of images with the smallest SHA-256 of their
name, 'train' the rest, so the split is the same on every machine. Each split is written in at
least 32 shards (see sharding.py) so that up to 32 hosts read their own files.
"""
import csv
import dataclasses
import io
import posixpath
import tarfile
from typing import Iterator, Optional
import zlib

from absl import logging
import tensorflow as tf
import tensorflow_datasets as tfds

from vae_dist import errors
from vae_dist.data.sources import common
from vae_dist.data.sources import images
from vae_dist.data.sources import sharding

NAME = "cartoon_set"
HOMEPAGE = "https://google.github.io/cartoonset/"
DOWNLOAD_URL = "https://storage.cloud.google.com/cartoonset_public_files/{archive}.tgz"
DEFAULT_CONFIG = "10k"

# Attribute -> number of variants, in the order of the CSV lines of the real data set.
ATTRIBUTES = {
    "eye_angle": 3,
    "eye_lashes": 2,
    "eye_lid": 2,
    "chin_length": 3,
    "eyebrow_weight": 2,
    "eyebrow_shape": 14,
    "eyebrow_thickness": 4,
    "face_shape": 7,
    "facial_hair": 15,
    "hair": 111,
    "eye_color": 5,
    "face_color": 11,
    "hair_color": 10,
    "glasses": 12,
    "glasses_color": 7,
    "eye_slant": 3,
    "eyebrow_width": 3,
    "eye_eyebrow_distance": 3,
}

_CITATION = """\
@misc{cartoonset,
  author = {Forrester Cole and Inbar Mosseri and Dilip Krishnan and Aaron Sarna and
            Aaron Maschinot and Bill Freeman and Shiraz Fuman},
  title = {Cartoon Set: An Image Dataset of Random Cartoons},
  howpublished = {\\url{https://google.github.io/cartoonset/}},
}
"""


def archive_url(archive: str) -> str:
  """Where Google serves an archive, e.g. archive_url('cartoonset10k')."""
  return DOWNLOAD_URL.format(archive=archive)


class CartoonSetConfig(tfds.core.BuilderConfig):
  """A Cartoon Set size: which archive to read."""

  def __init__(self, *, archive: str, num_images: int, **kwargs):
    super().__init__(**kwargs)
    self.archive = archive
    self.num_images = num_images


CONFIGS = {
    "10k": CartoonSetConfig(name="10k", archive="cartoonset10k", num_images=10_000,
                            description="10,000 cartoons (cartoonset10k.tgz)."),
    "100k": CartoonSetConfig(name="100k", archive="cartoonset100k", num_images=100_000,
                             description="100,000 cartoons (cartoonset100k.tgz)."),
}


def manual_download_instructions() -> str:
  """The text TFDS shows when the manual dir is empty (MANUAL_DOWNLOAD_INSTRUCTIONS)."""
  return (
      f"Download cartoonset10k.tgz (config 10k) or cartoonset100k.tgz (config 100k) from "
      f"{HOMEPAGE} (files: {archive_url('cartoonset10k')} and {archive_url('cartoonset100k')}) "
      f"and put it, or the folder it extracts to (cartoonset10k/ or cartoonset100k/), in the "
      f"manual dir (vae_dist: config.manual_dir).")


@dataclasses.dataclass(frozen=True)
class Source:
  """Where the images are: an archive (.tgz) or its extracted folder."""

  path: str
  is_archive: bool
  archive: str  # The set's name, 'cartoonset10k' or 'cartoonset100k'.


def find_source(manual_dir: str, archive: str):
  """Looks for the extracted folder, then the archive, in manual_dir.

  Returns:
    (source, looked): the Source or None, and the places searched with what they held.
  """
  folder = common.join(manual_dir, archive)
  if common.is_dir(folder):
    return Source(folder, False, archive), [f"{folder}: found"]
  looked = [f"{folder}: no such folder"]
  for suffix in (".tgz", ".tar.gz", ".tar"):
    path = common.join(manual_dir, archive + suffix)
    if common.is_file(path):
      return Source(path, True, archive), looked + [f"{path}: found"]
    looked.append(f"{path}: no such file")
  return None, looked


def example_key(member: str, archive: str) -> Optional[tuple[str, str]]:
  """'cartoonset10k/0/cs1.png' -> ('0/cs1', '.png'): the path inside the set, and the extension.

  Returns:
    None for entries that are not part of the data (folders' macOS metadata).
  """
  parts = [p for p in member.replace("\\", "/").split("/") if p not in ("", ".")]
  if archive in parts:
    parts = parts[parts.index(archive) + 1:]
  # macOS adds __MACOSX/ folders and ._name resource forks to archives made in the Finder.
  if not parts or parts[0] == "__MACOSX" or parts[-1].startswith("."):
    return None
  stem, ext = posixpath.splitext("/".join(parts))
  return stem, ext.lower()


@dataclasses.dataclass
class Index:
  """What one pass over the source found, by example key."""

  csv_texts: dict = dataclasses.field(default_factory=dict)  # key -> CSV text
  csv_names: dict = dataclasses.field(default_factory=dict)  # key -> CSV location, for messages
  pngs: dict = dataclasses.field(default_factory=dict)  # key -> PNG path or archive member


def _archive_files(path: str) -> Iterator[tuple[tarfile.TarInfo, tarfile.TarFile]]:
  """Streams the files of a tar archive (read once, front to back; gzip or not).

  Raises:
    DataError: the archive is damaged or truncated.
  """
  try:
    with tf.io.gfile.GFile(path, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
      for member in tar:
        if member.isfile():
          yield member, tar
  except _ARCHIVE_ERRORS as e:
    raise _damaged_archive(path, e) from None


def _read_member(path: str, tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
  """The bytes of one archive member (the tar is streamed: only before the next member)."""
  try:
    return tar.extractfile(member).read()
  except _ARCHIVE_ERRORS as e:
    raise _damaged_archive(path, e) from None


_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError, tf.errors.OpError)


def _damaged_archive(path: str, error: BaseException) -> errors.DataError:
  return errors.DataError(
      f"Cartoon Set archive {path} is damaged or truncated ({common.first_line(error)}); "
      f"download it again from {HOMEPAGE}.")


def _source_files(source: Source) -> Iterator[tuple[str, str, str, object]]:
  """Yields (key, extension, location, reader) for the set's files; reader() returns bytes.

  For an archive the reader only works until the next file is yielded (the tar is streamed).
  """
  if source.is_archive:
    for member, tar in _archive_files(source.path):
      parsed = example_key(member.name, source.archive)
      if parsed:
        yield (*parsed, f"{source.path}:{member.name}",
               lambda m=member, t=tar: _read_member(source.path, t, m))
    return
  for directory, _, names in tf.io.gfile.walk(source.path):
    for name in sorted(names):
      path = common.join(directory, name)
      parsed = example_key(path[len(source.path):], source.archive)
      if parsed:
        yield (*parsed, path, None)


def index_source(source: Source) -> Index:
  """Reads every CSV and notes where every PNG is (image data is read later, per split)."""
  index = Index()
  for key, ext, location, read in _source_files(source):
    if ext == ".csv":
      if read is None:
        with tf.io.gfile.GFile(location, "rb") as f:
          data = f.read()
      else:
        data = read()
      index.csv_texts[key] = data.decode("utf-8", "replace")
      index.csv_names[key] = location
    elif ext == ".png":
      index.pngs[key] = location
  return index


def iter_pngs(source: Source, index: Index, keys) -> Iterator[tuple[str, Optional[bytes], str]]:
  """Yields (key, png bytes, location) for the wanted keys.

  From a folder the bytes are None: the worker threads read the files, in parallel.
  """
  if not source.is_archive:
    for key in keys:
      yield key, None, index.pngs[key]
    return
  wanted = set(keys)
  for key, ext, location, read in _source_files(source):
    if ext == ".png" and key in wanted and index.pngs[key] == location:
      yield key, read(), location


class BadExampleError(Exception):
  """One image or its attributes cannot be used; the message says which file and why."""


def parse_attributes(text: str, where: str) -> dict:
  """Parses one csNNNN.csv into {attribute: variant}.

  Raises:
    BadExampleError: a line is malformed, an attribute is unknown or missing, a variant is out
      of range, or the number of variants differs from the data set's.
  """
  values = {}
  for row in csv.reader(io.StringIO(text), skipinitialspace=True):
    if not row or not "".join(row).strip():
      continue
    if len(row) != 3:
      raise BadExampleError(f"{where}: line {row!r} is not `\"name\", variant, num_variants`")
    name = row[0].strip()
    try:
      variant, num_variants = int(row[1]), int(row[2])
    except ValueError:
      raise BadExampleError(f"{where}: line {row!r} has a non-integer value") from None
    if name not in ATTRIBUTES:
      raise BadExampleError(f"{where}: unknown attribute {name!r}")
    if num_variants != ATTRIBUTES[name]:
      raise BadExampleError(f"{where}: {name} has {num_variants} variants, the Cartoon Set "
                            f"has {ATTRIBUTES[name]}")
    if not 0 <= variant < num_variants:
      raise BadExampleError(f"{where}: {name} variant {variant} is not in 0..{num_variants - 1}")
    values[name] = variant
  missing = [name for name in ATTRIBUTES if name not in values]
  if missing:
    raise BadExampleError(f"{where}: missing attributes {', '.join(missing)}")
  return values


class CartoonSet(sharding.HostShardedBuilder):
  """Google's Cartoon Set: RGB cartoon faces with 18 categorical attributes."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release: RGB on white, 18 attributes, 90/10 hash split."}
  BUILDER_CONFIGS = list(CONFIGS.values())
  DEFAULT_BUILDER_CONFIG_NAME = DEFAULT_CONFIG
  MANUAL_DOWNLOAD_INSTRUCTIONS = manual_download_instructions()

  def __init__(self, *, skip_corrupt_images: bool = False, **kwargs):
    """Args: skip_corrupt_images: skip (and log) unreadable examples instead of failing."""
    self._skip_corrupt_images = skip_corrupt_images
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    attributes = {name: tfds.features.ClassLabel(num_classes=n) for name, n in ATTRIBUTES.items()}
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__.split("\n\n")[1],
        features=tfds.features.FeaturesDict({
            # 500x500 in the real set; the size is left open so small test archives work too.
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
            "attributes": tfds.features.FeaturesDict(attributes),
            "filename": tfds.features.Text(),  # Path inside the set, e.g. 'cs1234.png'.
        }),
        homepage=HOMEPAGE,
        citation=_CITATION,
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    config = self.builder_config
    try:
      manual_dir = str(dl_manager.manual_dir)
    except AssertionError as e:  # TFDS: the manual dir does not exist or is empty.
      raise missing_error(config.name, str(e).splitlines()[:1]) from None
    source, looked = find_source(manual_dir, config.archive)
    if source is None:
      raise missing_error(config.name, looked)
    logging.info("Cartoon Set %s: reading %s", config.name, source.path)
    index = index_source(source)
    if len(index.pngs) != config.num_images:
      logging.info("Cartoon Set %s: %d images in %s (the published set has %d).", config.name,
                   len(index.pngs), source.path, config.num_images)
    orphans = sorted(set(index.csv_texts) - set(index.pngs))
    if orphans:
      logging.warning("Cartoon Set: %d attribute files have no image and are ignored, e.g. %s",
                      len(orphans), index.csv_names[orphans[0]])
    if not index.pngs:
      raise errors.DataError(f"Cartoon Set source {source.path} holds no .png images.")
    train, test = common.holdout_split(sorted(index.pngs))
    self.info.metadata["skipped_files"] = []
    return {"train": self._generate_examples(source, index, train),
            "test": self._generate_examples(source, index, test)}

  def _generate_examples(self, source: Source, index: Index, keys):  # pylint: disable=W0221
    """Yields (key, example) for the given keys, skipping or failing on bad ones."""
    def make(item):
      key, data, where = item
      try:
        if data is None:
          with tf.io.gfile.GFile(where, "rb") as f:
            data = f.read()
        if key not in index.csv_texts:
          raise BadExampleError(f"{where}: no attributes file {posixpath.basename(key)}.csv")
        attributes = parse_attributes(index.csv_texts[key], index.csv_names[key])
        try:
          image = images.rgb_png(data)
        except images.UnreadableImageError as e:
          raise BadExampleError(f"{where}: unreadable image ({e})") from None
      except BadExampleError as e:
        return key, None, str(e)
      return key, {"image": image, "attributes": attributes, "filename": key + ".png"}, None

    written = 0
    for key, example, problem in images.ordered_map(make, iter_pngs(source, index, keys)):
      if example is None:
        self._bad_example(problem)
        continue
      written += 1
      yield key, example
    if not written:
      raise errors.DataError(
          f"Cartoon Set {self.builder_config.name}: a split has no usable images "
          f"({len(keys)} listed, all skipped) in {source.path}.")

  def _bad_example(self, problem: str) -> None:
    if not self._skip_corrupt_images:
      raise errors.DataError(
          f"Cartoon Set: {problem}. Replace the file (download the archive again from "
          f"{HOMEPAGE}), or set config.skip_corrupt_images=True to skip such examples.")
    logging.warning("Cartoon Set: skipping %s", problem)
    self.info.metadata["skipped_files"].append(problem)


def missing_error(config_name: str, looked) -> errors.DataError:
  """The DataError for archives found nowhere."""
  config = CONFIGS[config_name]
  return common.missing_data_error(
      NAME, looked,
      [f"download {config.archive}.tgz from {HOMEPAGE} ({archive_url(config.archive)}) and set "
       f"config.manual_dir to the folder holding it (extracting it there works too)"],
      config=config_name)


def load(config_name: str, data_dir: str, manual_dir: str,
         skip_corrupt_images: bool) -> tfds.core.DatasetBuilder:
  """Returns the prepared Cartoon Set builder, preparing it from manual_dir if needed.

  Raises:
    DataError: unknown config, archive missing or damaged, or a bad image (unless skipped).
  """
  config_name = config_name or DEFAULT_CONFIG
  if config_name not in CONFIGS:
    raise errors.DataError(
        f"Data set '{NAME}' has configs {', '.join(CONFIGS)}; config.dataset_config is "
        f"'{config_name}'.")
  builder = CartoonSet(config=config_name, data_dir=data_dir or None,
                       skip_corrupt_images=skip_corrupt_images)
  if builder.is_prepared():
    return builder
  manual_dir = manual_dir or common.default_manual_dir(builder.data_dir_root)
  source, looked = find_source(manual_dir, CONFIGS[config_name].archive)
  if source is None:
    raise missing_error(config_name,
                        [f"TFDS data dir: {builder.data_path} (not prepared)", *looked])
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=manual_dir, try_download_gcs=False))
  skipped = builder.info.metadata.get("skipped_files", [])
  if skipped:
    logging.warning("Cartoon Set %s: skipped %d unreadable examples while preparing.",
                    config_name, len(skipped))
  return builder

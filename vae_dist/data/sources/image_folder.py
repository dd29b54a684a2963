"""A folder of JPEG and PNG files as a TFDS data set, prepared once into the data dir.

Like Keras' image_dataset_from_directory: every .jpg/.jpeg/.png under the folder (recursively,
hidden files and folders left out) is an example. When every image sits inside a top-level
subfolder, the subfolder's name is its 'label' (ClassLabel, names sorted); when some sit at the
root, there is no label. Each example also has 'filename', its path relative to the folder.
Images are stored RGB (transparency composited on white): JPEGs and PNGs that decode to RGB
unchanged are kept as they are, the rest is re-encoded as PNG.

The prepared data set lives in <data_dir>/image_folder/<folder name>_<hash of its path>/1.0.0
with, in its metadata, a fingerprint of the file list (names, sizes and modification times).
A later run reuses it while the fingerprint matches and prepares it again when files were added,
removed or changed. 'test' is the 10% of files with the smallest SHA-256 of their relative path
(at least one), 'train' the rest; each split is written in at least 32 shards (see sharding.py).
"""
import dataclasses
import hashlib
import os
import re
import stat as statmod
from typing import Optional

from absl import logging
import tensorflow as tf
import tensorflow_datasets as tfds

from vae_dist import errors
from vae_dist.data.sources import common
from vae_dist.data.sources import images
from vae_dist.data.sources import sharding

NAME = "image_folder"
EXTENSIONS = (".jpg", ".jpeg", ".png")
_MAX_NAMED_FILES = 5


@dataclasses.dataclass(frozen=True)
class FolderScan:
  """The image files of a folder, as found before preparing."""

  root: str
  files: tuple  # Relative paths with '/' separators, sorted.
  label_names: Optional[tuple]  # Sorted top-level subfolders, or None when unlabelled.
  fingerprint: str  # SHA-256 of the file list with sizes and modification times.

  def label_of(self, relative: str) -> Optional[str]:
    return relative.split("/", 1)[0] if self.label_names is not None else None


def _is_hidden(name: str) -> bool:
  return name.startswith(".") or name == "__MACOSX"


def _walk(root: str):
  """Yields (relative path, 'size:mtime' or '') for every image file under root."""
  if common.is_url(root):  # Remote: names only; a stat per file would cost a request each.
    for directory, subdirs, names in tf.io.gfile.walk(root):
      subdirs[:] = [d for d in subdirs if not _is_hidden(d)]
      relative_dir = directory[len(root):].strip("/")
      for name in names:
        if not _is_hidden(name) and name.lower().endswith(EXTENSIONS):
          yield "/".join(p for p in (relative_dir, name) if p), ""
    return
  # Symlinks are followed, but each directory (by its real path) and each file (by its inode)
  # only once: a link loop would otherwise be walked until the path is too long, and a file
  # reached under two names would count twice and could land in both splits. Sorted, so the name kept is the
  # same on every machine.
  seen_dirs, seen_files = set(), set()
  skipped = {"not a regular file": [], "a second name of a file already listed": []}
  for directory, subdirs, names in os.walk(root, followlinks=True):
    real_dir = os.path.realpath(directory)
    if real_dir in seen_dirs:
      subdirs[:] = []
      continue
    seen_dirs.add(real_dir)
    subdirs[:] = sorted(d for d in subdirs if not _is_hidden(d)
                        and os.path.realpath(os.path.join(directory, d)) not in seen_dirs)
    relative_dir = os.path.relpath(directory, root)
    for name in sorted(names):
      if _is_hidden(name) or not name.lower().endswith(EXTENSIONS):
        continue
      path = os.path.join(directory, name)
      relative = (name if relative_dir == "." else os.path.join(relative_dir, name)).replace(
          os.sep, "/")
      try:
        stat = os.stat(path)
      except OSError:  # A dangling link.
        skipped["not a regular file"].append(relative)
        continue
      # Only regular files: opening a FIFO, socket or device named *.png would block or
      # read forever.
      if not statmod.S_ISREG(stat.st_mode):
        skipped["not a regular file"].append(relative)
        continue
      # The file's identity (device and inode) also catches hard links, which realpath cannot.
      identity = (stat.st_dev, stat.st_ino)
      if identity in seen_files:
        skipped["a second name of a file already listed"].append(relative)
        continue
      seen_files.add(identity)
      yield relative, f"{stat.st_size}:{stat.st_mtime_ns}"
  for why, names in skipped.items():
    if names:
      logging.warning("Image folder %s: skipped %d path(s) that are %s: %s%s", root, len(names),
                      why, ", ".join(names[:_MAX_NAMED_FILES]),
                      " ..." if len(names) > _MAX_NAMED_FILES else "")


def scan(root: str) -> FolderScan:
  """Lists the images of a folder.

  Raises:
    DataError: no folder given, no such folder, or no images in it.
  """
  if not root:
    raise errors.DataError(
        "config.dataset='image_folder' needs config.image_folder: the folder of .jpg/.png "
        "images to train on.")
  if not common.is_dir(root):
    raise errors.DataError(f"Data set 'image_folder': config.image_folder={root} is not a "
                           f"folder.")
  entries = sorted(_walk(root))
  if not entries:
    raise errors.DataError(
        f"Data set 'image_folder': no {'/'.join(EXTENSIONS)} files under {root} (searched "
        f"recursively, hidden files skipped).")
  files = tuple(relative for relative, _ in entries)
  fingerprint = hashlib.sha256("\n".join(f"{r}\t{s}" for r, s in entries).encode()).hexdigest()
  labelled = all("/" in relative for relative in files)
  label_names = tuple(sorted({r.split("/", 1)[0] for r in files})) if labelled else None
  return FolderScan(root, files, label_names, fingerprint)


def config_name(root: str) -> str:
  """A builder config name unique to the folder: its sanitised base name and a path hash."""
  base = re.sub(r"[^a-z0-9]+", "_", os.path.basename(root.rstrip("/")).lower()).strip("_")
  digest = hashlib.sha256(root.encode("utf-8")).hexdigest()[:10]
  return f"{base[:40] or 'root'}_{digest}"


class ImageFolder(sharding.HostShardedBuilder, skip_registration=True):
  """The images of one folder; build it with `load` (it needs the folder's scan)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "RGB images, optional subfolder labels, 90/10 hash split."}

  def __init__(self, *, folder: FolderScan, skip_corrupt_images: bool = False, **kwargs):
    """Args: folder: the scan of the folder; skip_corrupt_images: skip and log bad files."""
    self._folder = folder
    self._skip_corrupt_images = skip_corrupt_images
    self._folder_config = tfds.core.BuilderConfig(name=config_name(folder.root),
                                                  description=f"Images under {folder.root}")
    super().__init__(config=self._folder_config, **kwargs)

  def get_builder_config(self, name, version=None):  # pylint: disable=arguments-differ
    # Each folder has its own config, made in __init__. TFDS looks a config up by name to check
    # it is known; answering for this instance spares a "custom data configuration" warning.
    del version
    return self._folder_config if name == self._folder_config.name else None

  def _info(self) -> tfds.core.DatasetInfo:
    features = {
        "image": tfds.features.Image(shape=(None, None, 3)),
        "filename": tfds.features.Text(),  # Relative to the folder, '/'-separated.
    }
    if self._folder.label_names is not None:
      features["label"] = tfds.features.ClassLabel(names=list(self._folder.label_names))
    return tfds.core.DatasetInfo(
        builder=self,
        description=f"The .jpg and .png images under {self._folder.root}.",
        features=tfds.features.FeaturesDict(features),
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    if len(self._folder.files) < 2:
      raise errors.DataError(
          f"Data set 'image_folder': {self._folder.root} has 1 image; at least 2 are needed "
          f"(one for the test split).")
    metadata = self.info.metadata
    metadata.update(source=self._folder.root, fingerprint=self._folder.fingerprint,
                    num_files=len(self._folder.files), skipped_files=[])
    train, test = common.holdout_split(self._folder.files)
    return {"train": self._generate_examples(train), "test": self._generate_examples(test)}

  def _generate_examples(self, files):  # pylint: disable=arguments-differ
    """Yields (relative path, example), skipping or failing on unreadable files."""
    def make(relative):
      path = common.join(self._folder.root, *relative.split("/"))
      try:
        with tf.io.gfile.GFile(path, "rb") as f:
          data = images.rgb_feature_bytes(f.read())
      except images.UnreadableImageError as e:
        return relative, None, f"{path}: {e}"
      example = {"image": data, "filename": relative}
      if self._folder.label_names is not None:
        example["label"] = self._folder.label_of(relative)
      return relative, example, None

    written = 0
    for relative, example, problem in images.ordered_map(make, files):
      if example is None:
        self._bad_file(problem)
        continue
      written += 1
      yield relative, example
    if not written:
      raise errors.DataError(
          f"Data set 'image_folder': a split of {self._folder.root} has no readable images "
          f"({len(files)} files, all skipped as unreadable).")

  def _bad_file(self, problem: str) -> None:
    if not self._skip_corrupt_images:
      raise errors.DataError(
          f"Data set 'image_folder': cannot read image {problem}. Replace or delete the file, "
          f"or set config.skip_corrupt_images=True to skip unreadable images.")
    logging.warning("image_folder: skipping unreadable image %s", problem)
    self.info.metadata["skipped_files"].append(problem)


def _stored_fingerprint(builder: tfds.core.DatasetBuilder) -> Optional[str]:
  try:
    return builder.info.metadata.get("fingerprint")
  except Exception:  # pylint: disable=broad-except  # Unreadable metadata: prepare again.
    return None


def load(root: str, data_dir: str, skip_corrupt_images: bool) -> tfds.core.DatasetBuilder:
  """Returns the prepared builder of an image folder, preparing it when new or changed.

  Raises:
    DataError: missing or empty folder, an unreadable image (unless skipped), an empty split.
  """
  folder = scan(root)

  def make_builder():
    return ImageFolder(folder=folder, skip_corrupt_images=skip_corrupt_images,
                       data_dir=data_dir or None)

  builder = make_builder()
  if builder.is_prepared():
    if _stored_fingerprint(builder) == folder.fingerprint:
      _log_skipped(builder, "when it was prepared")
      return builder
    logging.info("image_folder: the files under %s changed since %s was prepared; preparing "
                 "it again.", root, builder.data_path)
    builder.data_path.rmtree()
    builder = make_builder()
  logging.info("image_folder: preparing %d images under %s into %s.", len(folder.files), root,
               builder.data_path)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  _log_skipped(builder, "")
  return builder


def _log_skipped(builder: tfds.core.DatasetBuilder, when: str) -> None:
  skipped = builder.info.metadata.get("skipped_files") or []
  if skipped:
    shown = "; ".join(skipped[:_MAX_NAMED_FILES]) + ("; ..." if len(skipped) > 5 else "")
    logging.warning("image_folder: skipped %d unreadable image(s) of %d%s: %s", len(skipped),
                    builder.info.metadata.get("num_files", 0), f" {when}" if when else "", shown)

"""load_builder: config -> prepared TFDS builder; and what the features say about labels."""
from typing import Optional

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vae_dist import errors
from vae_dist.data.sources import cartoon_set
from vae_dist.data.sources import catalog
from vae_dist.data.sources import common
from vae_dist.data.sources import image_folder
from vae_dist.data.sources import mnist_local

BOOL_CLASS_NAMES = ["False", "True"]


def load_builder(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """Returns a prepared TFDS builder for config.dataset, preparing it first when needed.

  config.dataset is 'image_folder' (config.image_folder), 'cartoon_set' (config.dataset_config
  '10k' or '100k', archives in config.manual_dir), 'mnist' or 'fashion_mnist' (prepared from
  local IDX files when present, else downloaded), or any TFDS catalog image data set.
  config.data_dir ('' = TFDS' default) and config.manual_dir are honoured by all.

  Args:
    config: the run config (fields of config_defaults.base_config()).

  Returns:
    A prepared builder: as_dataset() works and info.splits has the example counts.

  Raises:
    DataError: the data cannot be found, downloaded or read; the message says where it looked
      and how to get the data.
  """
  try:
    return _load(config)
  except (tf.errors.OpError, OSError) as e:
    # Files that cannot be read or written (permissions, a gs:// bucket without credentials,
    # a full disk): the user's to fix, so one message naming the configured places.
    places = ", ".join(f"config.{field}={config[field]!r}"
                       for field in ("data_dir", "manual_dir", "image_folder") if config[field])
    raise errors.DataError(
        f"Data set '{config.dataset}': file access failed ({common.first_line(e)}). Check that "
        f"the data dir (TFDS' default when unset) and the data places are readable and "
        f"writable{': ' + places if places else ''}.") from None


def _load(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """load_builder without the translation of file access errors."""
  name = config.dataset.strip()
  data_dir = common.expand_path(config.data_dir)
  manual_dir = common.expand_path(config.manual_dir)
  skip_corrupt = bool(config.skip_corrupt_images)
  if name == image_folder.NAME:
    return image_folder.load(common.expand_path(config.image_folder), data_dir, skip_corrupt)
  if name == cartoon_set.NAME:
    return cartoon_set.load(config.dataset_config, data_dir, manual_dir, skip_corrupt)
  if name in mnist_local.NAMES and not config.dataset_config:
    return mnist_local.load(name, data_dir, manual_dir)
  return catalog.load(name, config.dataset_config, data_dir, manual_dir)


def label_names(builder: tfds.core.DatasetBuilder) -> Optional[list]:
  """Class names of the 'label' feature, or None when the data set has no ClassLabel 'label'."""
  features = builder.info.features
  if "label" in features and isinstance(features["label"], tfds.features.ClassLabel):
    return list(features["label"].names)
  return None


def attribute_features(builder: tfds.core.DatasetBuilder) -> dict:
  """Attribute name -> class names, for the categorical attributes under example['attributes'].

  Cartoon Set's 18 attributes are ClassLabels (values are class indices); CelebA's 40 are
  booleans, given the class names ['False', 'True'] (int(value) indexes them).

  Returns:
    {} when the data set has no 'attributes' feature.
  """
  features = builder.info.features
  if "attributes" not in features or not isinstance(features["attributes"],
                                                    tfds.features.FeaturesDict):
    return {}
  out = {}
  for name, feature in features["attributes"].items():
    if isinstance(feature, tfds.features.ClassLabel):
      out[name] = list(feature.names)
    elif feature.shape == () and np.dtype(feature.np_dtype) == np.bool_:
      out[name] = list(BOOL_CLASS_NAMES)
  return out

"""Data sets as prepared TFDS builders: catalog, MNIST from local files, Cartoon Set, folders.

  builder = datasets.load_builder(config)   # prepared tfds.core.DatasetBuilder
  datasets.label_names(builder)             # ['T-shirt/top', ...] or None
  datasets.attribute_features(builder)      # {'hair': ['0', ..., '110'], ...} or {}

Every failure a user can fix (missing, damaged or empty data) raises errors.DataError with one
message naming the data set, the places looked and how to get the data. Preprocessing (crop,
resize, channels, scaling) is the input pipeline's; the builders store uint8 images as found
(Cartoon Set and image folders as RGB).
"""
from vae_dist.data.sources.loading import attribute_features
from vae_dist.data.sources.loading import label_names
from vae_dist.data.sources.loading import load_builder

# Importing cartoon_set registers 'cartoon_set' with TFDS (tfds.builder('cartoon_set/10k')).
from vae_dist.data.sources import cartoon_set  # noqa: F401  # pylint: disable=unused-import

__all__ = ["load_builder", "label_names", "attribute_features"]

"""Folders of JPEG/PNG images (mixed modes, subfolders, corrupt files) as TFDS data sets."""
import io
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

import datagen
from vae_dist.config import defaults
from vae_dist.data import sources
from vae_dist.data.sources import images
from vae_dist import errors


def make_config(tmp_path, folder, skip=False):
  config = defaults.base_config()
  config.dataset = "image_folder"
  config.image_folder = str(folder)
  config.data_dir = str(tmp_path / "tfds")
  config.skip_corrupt_images = skip
  return config


def read_all(builder):
  out = {}
  for split in builder.info.splits:
    for example in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)):
      out[example["filename"].decode()] = example
  return out


def test_mixed_folder_corrupt_file_is_named_then_skipped(tmp_path, caplog):
  folder = datagen.write_image_folder(tmp_path / "pictures", per_class=6, corrupt=1)
  bad = os.path.join(folder["root"], folder["corrupt"][0])
  with pytest.raises(errors.DataError, match="skip_corrupt_images") as raised:
    sources.load_builder(make_config(tmp_path, folder["root"]))
  assert bad in str(raised.value)

  builder = sources.load_builder(make_config(tmp_path, folder["root"], skip=True))
  assert "skipped 1 unreadable image(s) of 13" in caplog.text
  assert sources.label_names(builder) == ["cats", "dogs"]
  assert builder.info.features["image"].shape == (None, None, 3)
  assert sum(s.num_examples for s in builder.info.splits.values()) == 12
  assert builder.info.splits["test"].num_examples == 1

  examples = read_all(builder)
  assert set(examples) == set(folder["files"])
  names = sources.label_names(builder)
  for relative, example in examples.items():
    assert names[example["label"]] == folder["files"][relative]
    image = example["image"]
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[:2] in ((24, 20), (24, 21))
    if "_L_" in relative:  # Grayscale: equal channels.
      assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
    if "RGBA" in relative:  # Transparent top half: white.
      assert (image[:12] == 255).all() and not (image[12:] == 255).all()


def test_prepared_once_then_reused_and_prepared_again_when_files_change(tmp_path):
  folder = datagen.write_image_folder(tmp_path / "pictures", classes=(), per_class=6)
  config = make_config(tmp_path, folder["root"])
  builder = sources.load_builder(config)
  assert "label" not in builder.info.features
  assert sources.label_names(builder) is None
  stamp = os.path.getmtime(builder.data_path / "dataset_info.json")

  assert sources.load_builder(config).data_path == builder.data_path
  assert os.path.getmtime(builder.data_path / "dataset_info.json") == stamp  # Reused.

  with open(os.path.join(folder["root"], "extra.png"), "wb") as f:
    f.write(datagen.image_file("RGB.png", (8, 8), seed=5))
  builder = sources.load_builder(config)
  assert sum(s.num_examples for s in builder.info.splits.values()) == 7
  assert "extra.png" in read_all(builder)


def test_two_folders_do_not_share_a_prepared_data_set(tmp_path):
  first = datagen.write_image_folder(tmp_path / "a" / "pics", classes=(), per_class=3)
  second = datagen.write_image_folder(tmp_path / "b" / "pics", classes=(), per_class=4)
  one = sources.load_builder(make_config(tmp_path, first["root"]))
  two = sources.load_builder(make_config(tmp_path, second["root"]))
  assert one.data_path != two.data_path
  assert sum(s.num_examples for s in one.info.splits.values()) == 3


@pytest.mark.parametrize("setup, message", [
    (lambda root: None, "is not a folder"),
    (lambda root: os.makedirs(os.path.join(root, "sub")), "no .jpg/.jpeg/.png files under"),
    (lambda root: datagen.write_image_folder(root, classes=(), per_class=1), "has 1 image"),
])
def test_missing_empty_or_tiny_folder(tmp_path, setup, message):
  root = str(tmp_path / "pictures")
  setup(root)
  with pytest.raises(errors.DataError, match=message):
    sources.load_builder(make_config(tmp_path, root))


def test_no_folder_given(tmp_path):
  with pytest.raises(errors.DataError, match="needs config.image_folder"):
    sources.load_builder(make_config(tmp_path, ""))


def test_unusable_data_dir_is_one_data_error(tmp_path):
  folder = datagen.write_image_folder(tmp_path / "pictures", classes=(), per_class=3)
  config = make_config(tmp_path, folder["root"])
  config.data_dir = str(tmp_path / "a-file")
  (tmp_path / "a-file").write_text("not a folder")
  with pytest.raises(errors.DataError, match="file access failed .*config.data_dir="):
    sources.load_builder(config)


def test_split_with_only_unreadable_images_is_an_error(tmp_path):
  folder = datagen.write_image_folder(tmp_path / "pictures", classes=(), per_class=0, corrupt=3)
  with pytest.raises(errors.DataError, match="no readable images"):
    sources.load_builder(make_config(tmp_path, folder["root"], skip=True))


def test_rgb_feature_bytes_keeps_plain_files_and_converts_the_rest():
  for kind in ("L.png", "RGB.png", "L.jpg", "RGB.jpg"):
    data = datagen.image_file(kind, (5, 6), seed=1)
    assert images.rgb_feature_bytes(data) is data
  for mode in ("RGBA", "LA", "P", "I;16", "CMYK"):
    buffer = io.BytesIO()
    source = Image.new(mode, (6, 5))
    source.save(buffer, format="JPEG" if mode == "CMYK" else "PNG")
    converted = Image.open(io.BytesIO(images.rgb_feature_bytes(buffer.getvalue())))
    assert converted.mode == "RGB" and converted.size == (6, 5)
  sixteen_bit = Image.fromarray(np.full((2, 2), 65535, np.uint16))
  assert images.to_rgb(sixteen_bit).getpixel((0, 0)) == (255, 255, 255)
  with pytest.raises(images.UnreadableImageError):
    images.rgb_feature_bytes(b"not an image")

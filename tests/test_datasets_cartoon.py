"""Cartoon Set prepared from archives (or folders) in Google's layout, written by the tests."""
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

import datagen
from vae_dist.config import defaults
from vae_dist.data import sources
from vae_dist.data.sources import cartoon_set
from vae_dist.data.sources import sharding
from vae_dist import errors


def make_config(tmp_path, dataset_config="10k", skip=False):
  config = defaults.base_config()
  config.dataset = "cartoon_set"
  config.dataset_config = dataset_config
  config.data_dir = str(tmp_path / "tfds")
  config.manual_dir = str(tmp_path / "manual")
  config.skip_corrupt_images = skip
  return config


def read_all(builder, split):
  examples = tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))
  return {ex["filename"].decode(): ex for ex in examples}


def check_examples(examples, written):
  for filename, example in examples.items():
    expected = written[filename[:-len(".png")]]
    image = example["image"]
    assert image.dtype == np.uint8 and image.shape == (40, 40, 3)
    assert (image[0, 0] == 255).all() and (image[-1, -1] == 255).all()  # Transparent -> white.
    assert tuple(image[20, 20]) == expected["colour"]
    assert {k: int(v) for k, v in example["attributes"].items()} == expected["attributes"]


def test_archive_builds_rgb_images_attributes_and_host_shards(tmp_path):
  written = datagen.write_cartoon_archive(tmp_path / "manual", 40)["examples"]
  builder = sources.load_builder(make_config(tmp_path))

  assert builder.name == "cartoon_set" and builder.builder_config.name == "10k"
  splits = builder.info.splits
  assert splits["train"].num_examples == 36 and splits["test"].num_examples == 4
  assert splits["train"].num_shards == sharding.MIN_SHARDS  # 32 hosts each read their own.
  assert splits["test"].num_shards == 4  # One example per shard when fewer than 32.
  attributes = sources.attribute_features(builder)
  assert list(attributes) == list(cartoon_set.ATTRIBUTES)
  assert len(attributes["hair"]) == 111 and len(attributes["eye_lashes"]) == 2
  assert sources.label_names(builder) is None

  train, test = read_all(builder, "train"), read_all(builder, "test")
  assert not set(train) & set(test)
  assert len(train) + len(test) == 40
  check_examples({**train, **test}, written)


def test_split_is_a_hash_of_the_file_name(tmp_path):
  """The same images land in 'test' whether read from the archive or the extracted folder."""
  datagen.write_cartoon_archive(tmp_path / "a" / "manual", 20)
  datagen.write_cartoon_archive(tmp_path / "b" / "manual", 20, extracted=True)
  tests = []
  for sub in ("a", "b"):
    builder = sources.load_builder(make_config(tmp_path / sub))
    tests.append(sorted(read_all(builder, "test")))
  assert tests[0] == tests[1] and len(tests[0]) == 2


def test_extracted_100k_folder_with_subfolders(tmp_path):
  written = datagen.write_cartoon_archive(tmp_path / "manual", 12, config="100k",
                                          extracted=True)["examples"]
  assert any("/" in key for key in written)
  builder = sources.load_builder(make_config(tmp_path, "100k"))
  assert builder.builder_config.name == "100k"
  examples = {**read_all(builder, "train"), **read_all(builder, "test")}
  assert len(examples) == 12
  check_examples(examples, written)


def test_corrupt_image_is_named_or_skipped_and_counted(tmp_path, caplog):
  archive = datagen.write_cartoon_archive(tmp_path / "manual", 14, corrupt=1)
  bad = archive["corrupt"][0] + ".png"
  with pytest.raises(errors.DataError, match=f"{bad}: unreadable image") as raised:
    sources.load_builder(make_config(tmp_path))
  assert "skip_corrupt_images" in str(raised.value)

  builder = sources.load_builder(make_config(tmp_path, skip=True))
  total = sum(split.num_examples for split in builder.info.splits.values())
  assert total == 14
  assert "skipped 1 unreadable examples" in caplog.text


def test_bad_attributes_file_is_named(tmp_path):
  archive = datagen.write_cartoon_archive(tmp_path / "manual", 5, extracted=True)
  path = os.path.join(archive["path"], "cs1002.csv")
  with open(path, "w") as f:
    f.write(datagen.cartoon_csv(datagen.cartoon_attributes(2)).replace(", 111", ", 112"))
  with pytest.raises(errors.DataError, match="cs1002.csv: hair has 112 variants"):
    sources.load_builder(make_config(tmp_path))


def test_truncated_archive(tmp_path):
  path = datagen.write_cartoon_archive(tmp_path / "manual", 30)["path"]
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[: len(data) * 2 // 3])
  with pytest.raises(errors.DataError, match="cartoonset10k.tgz is damaged or truncated"):
    sources.load_builder(make_config(tmp_path))


def test_missing_archive_says_where_and_how(tmp_path):
  with pytest.raises(errors.DataError) as raised:
    sources.load_builder(make_config(tmp_path, "100k"))
  message = str(raised.value)
  assert message.startswith("Data set 'cartoon_set' (config '100k') was not found.")
  for expected in [
      str(tmp_path / "tfds" / "cartoon_set" / "100k" / "1.0.0"),
      str(tmp_path / "manual" / "cartoonset100k") + ": no such folder",
      str(tmp_path / "manual" / "cartoonset100k.tgz") + ": no such file",
      "https://google.github.io/cartoonset/",
      "https://storage.cloud.google.com/cartoonset_public_files/cartoonset100k.tgz",
      "config.manual_dir",
  ]:
    assert expected in message
  assert "cartoonset100k.tgz" in cartoon_set.CartoonSet.MANUAL_DOWNLOAD_INSTRUCTIONS


def test_unknown_config(tmp_path):
  with pytest.raises(errors.DataError, match="has configs 10k, 100k"):
    sources.load_builder(make_config(tmp_path, "1k"))


def test_registered_with_tfds(tmp_path):
  datagen.write_cartoon_archive(tmp_path / "manual", 6)
  builder = tfds.builder("cartoon_set/10k", data_dir=str(tmp_path / "tfds"))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(tmp_path / "manual")))
  assert builder.info.splits["train"].num_examples == 5


def test_tfds_build_without_manual_files_says_where_to_get_them(tmp_path):
  builder = tfds.builder("cartoon_set/100k", data_dir=str(tmp_path / "tfds"))
  with pytest.raises(errors.DataError, match="does not exist or is empty.*\n.*To get it") as e:
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(tmp_path / "nowhere")))
  assert "cartoonset100k.tgz" in str(e.value)

"""MNIST and Fashion-MNIST prepared from local IDX files, and the errors for missing/bad files."""
import gzip
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.image_classification import mnist as tfds_mnist

import datagen
from vae_dist.config import defaults
from vae_dist.data import sources
from vae_dist.data.sources import catalog
from vae_dist.data.sources import idx
from vae_dist.data.sources import mnist_local
from vae_dist import errors


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
  """No test may reach the network or find this machine's Debian Fashion-MNIST by accident."""
  monkeypatch.setattr(catalog, "unreachable_hosts", lambda urls: ["example.invalid"])
  monkeypatch.setattr(mnist_local, "DEBIAN_FASHION_DIR", str(tmp_path / "no-debian"))


def make_config(tmp_path, dataset, manual_dir=""):
  config = defaults.base_config()
  config.dataset = dataset
  config.data_dir = str(tmp_path / "tfds")
  config.manual_dir = str(manual_dir)
  return config


def read_all(builder, split):
  return list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))


def check_matches(examples, images, labels):
  """Every example is one of the written images with its label, each exactly once."""
  by_pixels = {image.tobytes(): int(label) for image, label in zip(images, labels)}
  seen = set()
  for example in examples:
    assert example["image"].shape == (28, 28, 1)
    assert example["image"].dtype == np.uint8
    key = example["image"][..., 0].tobytes()
    assert by_pixels[key] == example["label"]
    seen.add(key)
  assert len(seen) == len(images) == len(examples)


def test_fashion_mnist_from_gzip_files_in_manual_dir(tmp_path):
  written = datagen.write_idx_dataset(tmp_path / "manual", 60, 10, seed=1)
  builder = sources.load_builder(make_config(tmp_path, "fashion_mnist", tmp_path / "manual"))

  assert builder.name == "fashion_mnist"
  assert str(builder.version) == "3.0.1"
  assert builder.data_path == tmp_path / "tfds" / "fashion_mnist" / "3.0.1"
  assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == {
      "train": 60, "test": 10}
  assert builder.info.splits["train"].num_shards == 1
  assert sources.label_names(builder)[:2] == ["T-shirt/top", "Trouser"]
  assert sources.attribute_features(builder) == {}
  for split in ("train", "test"):
    check_matches(read_all(builder, split), *written[split])


def test_prepared_data_is_reused_without_the_files(tmp_path):
  datagen.write_idx_dataset(tmp_path / "manual", 12, 4)
  config = make_config(tmp_path, "mnist", tmp_path / "manual")
  sources.load_builder(config)
  for name in os.listdir(tmp_path / "manual"):
    os.remove(tmp_path / "manual" / name)
  builder = sources.load_builder(config)
  assert isinstance(builder, tfds_mnist.MNIST)  # The catalog class reads what we wrote.
  assert builder.info.splits["train"].num_examples == 12


def test_mnist_from_raw_files_in_a_named_subfolder(tmp_path):
  written = datagen.write_idx_dataset(tmp_path / "manual" / "mnist", 20, 5, seed=2, gzip=False)
  builder = sources.load_builder(make_config(tmp_path, "mnist", tmp_path / "manual"))
  assert builder.name == "mnist"
  assert sources.label_names(builder) == [str(i) for i in range(10)]
  check_matches(read_all(builder, "test"), *written["test"])


def test_fashion_mnist_from_the_debian_package_folder(tmp_path, monkeypatch):
  datagen.write_idx_dataset(tmp_path / "debian", 15, 5)
  monkeypatch.setattr(mnist_local, "DEBIAN_FASHION_DIR", str(tmp_path / "debian"))
  builder = sources.load_builder(make_config(tmp_path, "fashion_mnist"))
  assert builder.info.splits["train"].num_examples == 15


def test_records_are_those_of_the_catalog_builder(tmp_path):
  """Byte-identical shards whichever builder wrote them, so runs shuffle and train the same."""
  written = datagen.write_idx_dataset(tmp_path / "raw", 40, 8, seed=3, gzip=False)

  class CatalogFromRawFiles(tfds_mnist.FashionMNIST, skip_registration=True):
    """TFDS' own generator code, fed the raw files instead of downloading them."""
    name = "fashion_mnist"

    def _split_generators(self, dl_manager):
      return [
          tfds.core.SplitGenerator(name=split, gen_kwargs=dict(
              num_examples=len(written[split][0]), data_path=written["paths"][split][0],
              label_path=written["paths"][split][1]))
          for split in ("train", "test")
      ]

  reference = CatalogFromRawFiles(data_dir=str(tmp_path / "reference"))
  reference.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  ours = sources.load_builder(make_config(tmp_path, "fashion_mnist", tmp_path / "raw"))

  for split in ("train", "test"):
    assert ours.info.splits[split].shard_lengths == reference.info.splits[split].shard_lengths
  names = sorted(n for n in os.listdir(reference.data_path) if ".tfrecord" in n)
  assert names and names == sorted(n for n in os.listdir(ours.data_path) if ".tfrecord" in n)
  for name in names:
    assert (reference.data_path / name).read_bytes() == (ours.data_path / name).read_bytes()


def corrupt(path, transform):
  with open(path, "rb") as f:
    data = gzip.decompress(f.read())
  with open(path, "wb") as f:
    f.write(gzip.compress(transform(data)))


@pytest.mark.parametrize("file_index, transform, message", [
    (0, lambda d: b"\x00\x00\x08\x01" + d[4:], "not an MNIST images file"),
    (1, lambda d: d[:-3], "truncated"),
    (0, lambda d: d + b"\x00" * 784, "longer than its header says"),
])
def test_bad_idx_files_are_named(tmp_path, file_index, transform, message):
  written = datagen.write_idx_dataset(tmp_path / "manual", 10, 3)
  bad = written["paths"]["test"][file_index]
  corrupt(bad, transform)
  with pytest.raises(errors.DataError, match=message) as raised:
    sources.load_builder(make_config(tmp_path, "mnist", tmp_path / "manual"))
  assert bad in str(raised.value)
  assert not (tmp_path / "tfds" / "mnist" / "3.0.1").exists()  # Nothing half-written is kept.


def test_count_mismatch_and_truncated_gzip(tmp_path):
  written = datagen.write_idx_dataset(tmp_path / "a", 10, 3)
  other = datagen.write_idx_dataset(tmp_path / "b", 10, 4)
  os.replace(other["paths"]["test"][1], written["paths"]["test"][1])
  with pytest.raises(errors.DataError, match="has 3 images but .* has 4 labels"):
    sources.load_builder(make_config(tmp_path, "mnist", tmp_path / "a"))

  with open(written["paths"]["train"][0], "rb") as f:
    data = f.read()
  with open(written["paths"]["train"][0], "wb") as f:
    f.write(data[: len(data) // 2])
  with pytest.raises(errors.DataError, match="damaged or truncated gzip"):
    idx.read_images(written["paths"]["train"][0])


def test_the_other_data_sets_official_files_are_refused(tmp_path, monkeypatch):
  written = datagen.write_idx_dataset(tmp_path / "manual", 10, 3)
  with open(written["paths"]["train"][1], "rb") as f:
    digest = __import__("hashlib").sha256(f.read()).hexdigest()
  monkeypatch.setitem(mnist_local._KNOWN_LABELS_FILES, digest, "fashion_mnist")
  with pytest.raises(errors.DataError, match="is the fashion_mnist labels file"):
    sources.load_builder(make_config(tmp_path, "mnist", tmp_path / "manual"))


def test_missing_data_names_every_place_and_way(tmp_path):
  datagen.write_idx_dataset(tmp_path / "manual", 10, 3)
  os.remove(tmp_path / "manual" / "t10k-labels-idx1-ubyte.gz")
  with pytest.raises(errors.DataError) as raised:
    sources.load_builder(make_config(tmp_path, "fashion_mnist", tmp_path / "manual"))
  message = str(raised.value)
  assert message.startswith("Data set 'fashion_mnist' is not prepared and cannot be downloaded")
  for expected in [
      str(tmp_path / "tfds" / "fashion_mnist" / "3.0.1"),
      f"{tmp_path / 'manual'}: missing t10k-labels-idx1-ubyte[.gz]",
      f"{tmp_path / 'manual' / 'fashion_mnist'}: no such folder",
      f"{tmp_path / 'manual' / 'fashion-mnist'}: no such folder",
      f"{tmp_path / 'no-debian'}: no such folder",
      "cannot connect to example.invalid",
      "apt-get install dataset-fashion-mnist",
      "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
      "config.manual_dir",
      "tfds build fashion_mnist",
  ]:
    assert expected in message
  assert "Traceback" not in message


def test_failed_download_becomes_one_data_error(tmp_path, monkeypatch):
  monkeypatch.setattr(catalog, "unreachable_hosts", lambda urls: [])

  def fail(self, **kwargs):
    raise ConnectionError("Name or service not known\nmore details")

  monkeypatch.setattr(tfds_mnist.MNIST, "download_and_prepare", fail)
  with pytest.raises(errors.DataError) as raised:
    sources.load_builder(make_config(tmp_path, "mnist", tmp_path / "empty"))
  message = str(raised.value)
  assert "download and preparation failed: ConnectionError: Name or service not known" in message
  assert "https://storage.googleapis.com/cvdf-datasets/mnist/" in message
  assert "more details" not in message


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"),
                    reason="Debian package dataset-fashion-mnist is not installed")
def test_debian_package_files_are_valid():
  files, _ = mnist_local.find_files("/usr/share/datasets/fashion-mnist")
  images, labels = idx.read_pair(*files["test"])
  assert images.shape == (10_000, 28, 28, 1) and labels.shape == (10_000,)
  mnist_local.check_identity("fashion_mnist", files)
  with pytest.raises(errors.DataError, match="is the fashion_mnist labels file"):
    mnist_local.check_identity("mnist", files)

"""Catalog data sets (mocked), unknown names, unreachable downloads, and the shared helpers."""
import socket

import pytest

import datagen
from vae_dist.config import defaults
from vae_dist.data import sources
from vae_dist.data.sources import catalog
from vae_dist.data.sources import common
from vae_dist.data.sources import sharding
from vae_dist import errors


def make_config(tmp_path, dataset, dataset_config=""):
  config = defaults.base_config()
  config.dataset = dataset
  config.dataset_config = dataset_config
  config.data_dir = str(tmp_path / "tfds")
  config.manual_dir = str(tmp_path / "manual")
  return config


def test_cifar10_through_mock_data(tmp_path):
  with datagen.mock_catalog("cifar10", tmp_path / "metadata", num_examples=6):
    builder = sources.load_builder(make_config(tmp_path, "cifar10"))
    assert builder.info.splits["train"].num_examples == 6
    assert len(sources.label_names(builder)) == 10  # Names come with the real download.
    assert sources.attribute_features(builder) == {}
    batch = next(iter(builder.as_dataset(split="train").batch(6)))
  assert batch["image"].shape == (6, 32, 32, 3) and batch["image"].dtype == "uint8"
  assert batch["label"].shape == (6,)


def test_celeb_a_attributes_through_mock_data(tmp_path):
  with datagen.mock_catalog("celeb_a", tmp_path / "metadata", num_examples=3,
                            splits=("train", "validation", "test")):
    builder = sources.load_builder(make_config(tmp_path, "celeb_a"))
    example = next(iter(builder.as_dataset(split="validation")))
  attributes = sources.attribute_features(builder)
  assert len(attributes) == 40
  assert attributes["Smiling"] == ["False", "True"]
  assert sources.label_names(builder) is None
  assert example["image"].shape == (218, 178, 3)
  assert example["attributes"]["Smiling"].dtype == "bool"


def test_unknown_name_suggests_close_ones(tmp_path):
  with pytest.raises(errors.DataError, match="Did you mean 'cifar10'") as raised:
    sources.load_builder(make_config(tmp_path, "cifar1O"))
  assert len(str(raised.value).splitlines()) == 1  # Not TFDS' list of 1,000 names.


def test_unknown_config_lists_the_configs(tmp_path):
  with pytest.raises(errors.DataError, match="Its configs: .*plain_text"):
    sources.load_builder(make_config(tmp_path, "imdb_reviews", "nope"))


def test_data_set_without_images_is_refused(tmp_path):
  with pytest.raises(errors.DataError, match="has no 'image' feature"):
    sources.load_builder(make_config(tmp_path, "imdb_reviews"))


def test_unreachable_download_fails_at_once_with_places_and_ways(tmp_path, monkeypatch):
  monkeypatch.setattr(catalog, "unreachable_hosts", lambda urls: ["www.cs.toronto.edu"])
  with pytest.raises(errors.DataError) as raised:
    sources.load_builder(make_config(tmp_path, "cifar10"))
  message = str(raised.value)
  assert message.startswith("Data set 'cifar10' is not prepared and cannot be downloaded.")
  assert str(tmp_path / "tfds" / "cifar10") in message
  assert "cannot connect to www.cs.toronto.edu" in message
  assert "tfds build cifar10 --data_dir=DIR" in message


def test_manual_download_instructions_are_in_the_message(tmp_path, monkeypatch):
  monkeypatch.setattr(catalog, "unreachable_hosts", lambda urls: [])
  with pytest.raises(errors.DataError) as raised:
    sources.load_builder(make_config(tmp_path, "celeb_a_hq", "128"))
  message = str(raised.value)
  assert "needs files downloaded by hand into config.manual_dir" in message
  assert str(tmp_path / "manual") in message
  assert "download and preparation failed" in message


def test_unreachable_hosts_probe(monkeypatch):
  for variable in catalog._PROXY_VARIABLES:
    monkeypatch.delenv(variable, raising=False)
  with socket.socket() as server:
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    assert catalog.unreachable_hosts([f"http://127.0.0.1:{port}/file.gz"]) == []
  # The port is closed now: refused at once.
  assert catalog.unreachable_hosts([f"http://127.0.0.1:{port}/a"], timeout=1) == ["127.0.0.1"]
  assert catalog.unreachable_hosts([]) == []
  monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
  assert catalog.unreachable_hosts([f"http://127.0.0.1:{port}/a"]) == []  # Cannot tell.


def test_holdout_split_is_deterministic_and_never_empty():
  keys = [f"cs{i}" for i in range(1000)]
  train, test = common.holdout_split(keys)
  assert len(test) == 100 and len(train) == 900 and not set(train) & set(test)
  assert common.holdout_split(list(reversed(keys))) == (train, test)
  # Adding keys changes the test set only at its margin.
  assert len(set(common.holdout_split(keys + ["x1", "x2"])[1]) & set(test)) >= 99
  assert common.holdout_split(["a", "b"])[1] and common.holdout_split(["a", "b"])[0]
  assert common.holdout_split(["a"]) == (["a"], [])


@pytest.mark.parametrize("num_examples, total_size, explicit, expected", [
    (9000, 200 << 20, None, 32),  # Small data: 32 shards instead of TFDS' 2.
    (20, 1 << 20, None, 20),  # Fewer examples than hosts: one per shard.
    (100_000, 200 << 30, None, 1024),  # Big data: TFDS' own, larger count.
    (9000, 200 << 20, 7, 7),  # An explicit DownloadConfig(num_shards=...) wins.
])
def test_host_shard_config(num_examples, total_size, explicit, expected):
  config = sharding.HostShardConfig(num_shards=explicit)
  assert config.get_number_shards(total_size, num_examples) == expected


def test_expand_path(monkeypatch):
  monkeypatch.setenv("HOME", "/home/someone")
  assert common.expand_path("") == ""
  assert common.expand_path("~/data") == "/home/someone/data"
  assert common.expand_path("gs://bucket/tfds/") == "gs://bucket/tfds"

"""The input pipeline on each kind of source: catalog (mock), image folders, Cartoon Set."""

import numpy as np
import tensorflow as tf

import cli
import datagen
from conftest import load_config
from vae_dist.data import input_pipeline
from vae_dist.data import sources


def _first_batch(builder, config):
  """The first train batch as the model sees it: uint8 from the host, scaled by the step's op."""
  ds = input_pipeline.train_dataset_fn(builder, config, start_step=0)(tf.distribute.InputContext())
  fed = next(iter(ds))["image"]
  assert fed.dtype == tf.uint8  # config.feed_dtype's default: a quarter of float32's bytes.
  return input_pipeline.model_input(fed, config).numpy()


def test_catalog_datasets_through_mock_data_give_batches_of_the_model_size(tmp_path):
  for name, size, channels in (("cifar10", 32, 3), ("celeb_a", 64, 3), ("cifar10", 16, 1)):
    config = load_config("default", "smoke")
    config.dataset, config.image_size, config.channels = name, size, channels
    config.crop = "center" if name == "celeb_a" else "none"
    config.decoder.filters = [64, 32, channels]
    with datagen.mock_catalog(name, tmp_path / name, 16) as data_dir:
      config.data_dir = data_dir
      builder = sources.load_builder(config)
      batch = _first_batch(builder, config)
    assert batch.shape == (8, size, size, channels), (name, batch.shape)
    assert batch.dtype == np.float32 and 0.0 <= batch.min() and batch.max() <= 1.0


def test_image_folder_of_mixed_modes_gives_rgb_and_grey_batches(tmp_path):
  datagen.write_image_folder(tmp_path / "images")
  config = load_config("default", "smoke")
  config.dataset, config.image_folder = "image_folder", str(tmp_path / "images")
  config.data_dir = str(tmp_path / "tfds")
  config.image_size = 16
  for channels in (3, 1):
    config.channels = channels
    batch = _first_batch(sources.load_builder(config), config)
    assert batch.shape == (8, 16, 16, channels)


def test_image_folder_of_odd_shapes_and_modes_gives_model_sized_batches(tmp_path):
  """Files of other shapes than the model's: 16-bit grey, 2-channel LA, palette, 1x1, 3x500."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  folder = tmp_path / "images"
  folder.mkdir()
  odd = {
      "grey16.png": Image.fromarray(rng.integers(0, 65535, (40, 40)).astype(np.uint16)),
      "la.png": Image.fromarray(rng.integers(0, 255, (20, 20, 2), dtype=np.uint8), mode="LA"),
      "palette.png": Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).convert("P"),
      "one_pixel.png": Image.fromarray(rng.integers(0, 255, (1, 1, 3), dtype=np.uint8)),
      "strip.png": Image.fromarray(rng.integers(0, 255, (3, 500, 3), dtype=np.uint8)),
  }
  for name, image in odd.items():
    image.save(folder / name)
  for i in range(3):  # Enough for one batch of 8 in the train split.
    for name, image in odd.items():
      image.save(folder / f"{i}_{name}")
  config = load_config("default", "smoke")
  config.dataset, config.image_folder = "image_folder", str(folder)
  config.data_dir = str(tmp_path / "tfds")
  config.image_size = 16
  builder = sources.load_builder(config)
  assert builder.info.splits["train"].num_examples + builder.info.splits["test"].num_examples == 20
  for channels in (3, 1):
    config.channels = channels
    batch = _first_batch(builder, config)
    assert batch.shape == (8, 16, 16, channels)
    assert np.isfinite(batch).all() and 0.0 <= batch.min() and batch.max() <= 1.0


def test_cartoon_archive_trains_a_smoke_run_and_has_attributes(tmp_path):
  datagen.write_cartoon_archive(tmp_path / "manual", 40)
  workdir = str(tmp_path / "run")
  proc = cli.run_main("configs/cartoon.py:smoke", workdir,
                      f"--config.manual_dir={tmp_path / 'manual'}",
                      f"--config.data_dir={tmp_path / 'tfds'}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  evals = [r for r in cli.read_metrics(workdir) if "eval/elbo" in r]
  assert evals and np.isfinite(evals[-1]["eval/elbo"])
  config = load_config("cartoon", "smoke")
  config.manual_dir, config.data_dir = str(tmp_path / "manual"), str(tmp_path / "tfds")
  builder = sources.load_builder(config)
  attributes = sources.attribute_features(builder)
  assert "hair" in attributes and "glasses" in attributes and len(attributes) == 18
  example = next(iter(builder.as_dataset(split="train")))
  assert int(example["attributes"]["hair"]) in range(len(attributes["hair"]))


def test_a_resumed_stream_gives_exactly_the_batches_it_would_have(tmp_path):
  datagen.write_idx_dataset(tmp_path / "idx", num_train=40, num_test=4)
  config = load_config("mnist", "smoke")
  config.dataset, config.binarize = "fashion_mnist", "dynamic"
  config.manual_dir, config.data_dir = str(tmp_path / "idx"), str(tmp_path / "tfds")
  builder = sources.load_builder(config)
  ctx = tf.distribute.InputContext()
  stream = iter(input_pipeline.train_dataset_fn(builder, config, start_step=0)(ctx))
  batches = [next(stream)["image"].numpy() for _ in range(16)]  # 40 examples: 3.2 epochs.
  # TensorFlow's global seed (even 0, which tf.data handles badly) changes nothing.
  tf.keras.utils.set_random_seed(0)
  try:
    again = iter(input_pipeline.train_dataset_fn(builder, config, start_step=0)(ctx))
    np.testing.assert_array_equal(next(again)["image"].numpy(), batches[0])
  finally:
    tf.random.set_seed(None)
  assert not np.array_equal(batches[0], batches[5])  # Epoch 2 is reshuffled and redrawn.
  for step in (1, 4, 5, 13):  # Inside an epoch, at and across epoch boundaries.
    resumed = input_pipeline.train_dataset_fn(builder, config, start_step=step)(ctx)
    np.testing.assert_array_equal(next(iter(resumed))["image"].numpy(), batches[step])

"""config.steps_per_element: k train steps' batches in one input element, the same batches as k=1.

On small generated Fashion-MNIST IDX data (random images), prepared once for the module: 36 train
examples, so batches of 8 straddle epochs, and elements straddle them too.
"""
import os

import numpy as np
import pytest
import tensorflow as tf

import ml_collections

import cli
import datagen
from conftest import build_trainer
from conftest import load_config
from conftest import mirrored
from vae_dist.config import checks
from vae_dist.data import device_data
from vae_dist.data import input_pipeline
from vae_dist.data import sources
from vae_dist.data import step_elements
from vae_dist.errors import ConfigError

NUM_TRAIN = 36


def _config(root, *, shuffle, cache="memory", binarize="dynamic"):
  config = load_config("fashion_mnist", "smoke")
  config.manual_dir, config.data_dir = str(root / "idx"), str(root / "tfds")
  config.shuffle, config.cache, config.binarize = shuffle, cache, binarize
  config.batch_size = 8
  return config


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp("per_element")
  datagen.write_idx_dataset(root / "idx", num_train=NUM_TRAIN, num_test=4, seed=6)
  return root, sources.load_builder(_config(root, shuffle="buffer"))


def _global_batches(strategy, builder, config, start_step, k, num_steps):
  """The first num_steps global batches (replicas' shares concatenated), read k per element."""
  it = iter(strategy.distribute_datasets_from_function(
      input_pipeline.train_dataset_fn(builder, config, start_step, k)))
  out = []
  while len(out) < num_steps:
    shares = [r.numpy() for r in strategy.experimental_local_results(next(it)["image"])]
    if k == 1:
      out.append(np.concatenate(shares))
    else:
      assert all(s.shape[0] == k for s in shares)
      out.extend(np.concatenate([s[i] for s in shares]) for i in range(k))
  return np.stack(out[:num_steps])


@pytest.mark.parametrize("shuffle,cache", [("buffer", "memory"), ("buffer", "none"),
                                           ("full", "memory")])
def test_elements_hold_the_batches_of_one_step_per_element(data, shuffle, cache):
  root, builder = data
  config = _config(root, shuffle=shuffle, cache=cache)
  for replicas in (1, 2):
    strategy = tf.distribute.get_strategy() if replicas == 1 else mirrored(2)
    for start_step in (0, 3):  # 3: a resumed run, not at a multiple of k.
      want = _global_batches(strategy, builder, config, start_step, 1, 12)  # 96 positions.
      assert want.shape == (12, 8, 28, 28, 1)
      assert len({b.tobytes() for b in want}) == 12  # Real, distinct batches.
      for k in (2, 4):
        got = _global_batches(strategy, builder, config, start_step, k, 12)
        np.testing.assert_array_equal(got, want, err_msg=f"{replicas=} {start_step=} {k=}")


def _device_global_batches(strategy, builder, config, start_step, k, num_steps):
  """As _global_batches, with cache='device': each replica gathers from its own copy."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.cache = "device"
  parts = device_data.HostParts()
  it = iter(strategy.distribute_datasets_from_function(
      input_pipeline.train_dataset_fn(builder, config, start_step, k, device_parts=parts)))
  copies = strategy.experimental_local_results(parts.place(strategy))
  devices = [tf.DeviceSpec.from_string(c.device) for c in copies]
  assert len({(d.device_type, d.device_index) for d in devices}) == len(copies)  # One each.
  out = []
  while len(out) < num_steps:
    shares = strategy.experimental_local_results(next(it))
    assert set(shares[0]) == {"rows", "seed", "first"}  # Row numbers travel, not images.
    for i in range(k):
      one = [tf.nest.map_structure(lambda v: v[i], s) if k > 1 else s for s in shares]
      out.append(np.concatenate([
          device_data.batch_images(c, s, config, config.batch_size).numpy()
          for c, s in zip(copies, one)]))
  return np.stack(out[:num_steps])


@pytest.mark.parametrize("shuffle", ["buffer", "full"])
def test_device_cache_steps_gather_the_batches_of_the_memory_cache(data, shuffle):
  """cache='device': the pipeline deals row numbers and each replica gathers from its copy of
  the part; the batches are bitwise those of cache='memory' (dynamic binarisation included)."""
  root, builder = data
  config = _config(root, shuffle=shuffle)
  for replicas in (1, 2):
    strategy = tf.distribute.get_strategy() if replicas == 1 else mirrored(2)
    for start_step in (0, 3):
      want = _global_batches(strategy, builder, config, start_step, 1, 12)
      for k in (1, 4):
        got = _device_global_batches(strategy, builder, config, start_step, k, 12)
        np.testing.assert_array_equal(got, want, err_msg=f"{replicas=} {start_step=} {k=}")


def test_the_automatic_choice_divides_the_loop_and_bounds_the_element(data):
  root, _ = data
  config = _config(root, shuffle="buffer")
  config.steps_per_loop = 50
  assert step_elements.steps_per_element(config, 16) == 50  # 50 x 12.5 KB.
  config.steps_per_loop = 1000
  assert step_elements.steps_per_element(config, 16) == 50  # The largest divisor <= 64.
  config.image_size, config.channels, config.steps_per_loop = 256, 3, 50
  assert step_elements.steps_per_element(config, 16) == 1  # One batch is 3 MiB.
  config.image_size = 128
  assert step_elements.steps_per_element(config, 16) == 1  # 768 KiB: stacking costs more.
  config.image_size = 64
  assert step_elements.steps_per_element(config, 16) == 10  # 10 x 192 KiB <= 4 MiB.
  assert step_elements.steps_per_element(config, 32) == 10  # 10 x 384 KiB.
  config.feed_dtype = "float32"
  assert step_elements.steps_per_element(config, 16) == 1  # 768 KiB a batch as float32.
  config.steps_per_element = 10
  assert step_elements.steps_per_element(config, 16) == 10  # Given: taken as it is.
  config.steps_per_element, config.cache, config.steps_per_loop = 0, "device", 500
  assert step_elements.steps_per_element(config, 16) == 500  # Rows: the whole loop.
  assert step_elements.steps_per_element(config, 4096) == 250  # 250 x 16 KiB <= 4 MiB.


def test_a_value_that_does_not_divide_the_loop_is_one_config_error(data):
  root, _ = data
  for value, says in ((3, "3 does not divide steps_per_loop=2"), (-1, "must be an integer >= 0")):
    config = _config(root, shuffle="buffer")
    config.steps_per_element = value  # The smoke config's loop: 2 steps.
    with pytest.raises(ConfigError) as e:
      checks.validate(config)
    assert str(e.value).startswith("config.steps_per_element: ") and "\n" not in str(e.value)
    assert says in str(e.value)
  proc = cli.run_main("configs/fashion_mnist.py:smoke", str(root / "refused"),
                      *cli.data_flags(root / "idx", root / "tfds"),
                      "--config.steps_per_element=3")
  assert cli.one_error(proc).startswith("error: config.steps_per_element: 3 does not divide")
  assert not os.path.exists(root / "refused")
  # A whole run with k=1 against runs with the automatic k: test_full_shuffle.py's CLI test.


def test_a_step_of_an_element_compiles_whole_as_a_tpu_would_compile_it():
  """Under TPUStrategy the replica step, its batch taken from the element by a loop index, is
  one XLA computation that takes the whole element, and the step is the step."""
  config = load_config("fashion_mnist", "smoke")
  config.jit_compile = "false"  # Nothing compiled inside; the whole step is compiled below.
  trainer = build_trainer(config, tf.distribute.get_strategy())

  def step_of_element(element, index):
    trainer.replica_step({"image": element[index]})

  compiled = tf.function(step_of_element, jit_compile=True)
  rng = np.random.default_rng(3)
  element = tf.constant(rng.integers(0, 256, (4, config.batch_size, 28, 28, 1), dtype=np.uint8))
  hlo = compiled.experimental_get_compiler_ir(element, tf.constant(0))(stage="hlo")
  assert f"u8[4,{config.batch_size},28,28,1]" in hlo  # The element is the program's input.
  for index in range(4):
    compiled(element, tf.constant(index))
  assert compiled.experimental_get_tracing_count() == 1  # One program for every index.
  assert int(trainer.step.numpy()) == 4 and int(trainer.optimizer.iterations.numpy()) == 4
  assert all(np.isfinite(v.numpy()).all() for v in trainer.model.weights)

  # cache='device': the replica's copy of the part and an element of row numbers are the
  # program's inputs, and the gather is compiled with the step.
  def step_of_rows(element, index, part):
    trainer.replica_step(tf.nest.map_structure(lambda v: v[index], element), part)

  compiled = tf.function(step_of_rows, jit_compile=True)
  part = tf.constant(rng.integers(0, 256, (50, 28, 28, 1), dtype=np.uint8))
  element = {"rows": tf.constant(rng.integers(0, 50, (4, config.batch_size), dtype=np.int32)),
             "seed": tf.zeros([4, 2], tf.int64), "first": tf.zeros([4], tf.int32)}
  hlo = compiled.experimental_get_compiler_ir(element, tf.constant(0), part)(stage="hlo")
  assert "u8[50,28,28,1]" in hlo and "gather(" in hlo
  for index in range(4):
    compiled(element, tf.constant(index), part)
  assert compiled.experimental_get_tracing_count() == 1
  assert int(trainer.step.numpy()) == 8
  assert all(np.isfinite(v.numpy()).all() for v in trainer.model.weights)

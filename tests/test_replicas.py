"""Training does not depend on the replica count, and replicas exchange only what they must.

In-process tests use the logical CPUs conftest makes; the end-to-end test runs the real command
on 1, 2 and 3 of them. What a step sends is counted by replica_traffic_probe (shared with
benchmarks/replica_traffic.py).
"""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

import cli
import replica_traffic_probe
from conftest import build_evaluator, build_trainer, load_config, mirrored
from vae_dist.train import steps


def _strategy(replicas):
  return tf.distribute.get_strategy() if replicas == 1 else mirrored(replicas)


def _images(n, seed=0):
  return tf.constant(np.random.default_rng(seed).uniform(size=(n, 28, 28, 1)).astype(np.float32))


def _stream(strategy, images, batch):
  ds = tf.data.Dataset.from_tensor_slices({"image": images}).batch(batch).repeat()
  # experimental_distribute_dataset splits each global batch in order over the replicas.
  return iter(strategy.experimental_distribute_dataset(ds))


def _copies(strategy, variable):
  """Each replica's copy of a Keras or TensorFlow variable."""
  if isinstance(variable, tf.keras.Variable):
    variable = variable.value
  return [c.numpy() for c in strategy.experimental_local_results(variable)]


def _train(config, replicas, num_steps):
  strategy = _strategy(replicas)
  trainer = build_trainer(config, strategy)
  before = [v.numpy() for v in trainer.model.weights]
  status = trainer.run_loop(_stream(strategy, _images(5 * config.batch_size), config.batch_size),
                            num_steps)
  assert status.step == num_steps
  return strategy, trainer, before


def test_batchnorm_config_gives_the_same_weights_on_1_2_and_3_replicas():
  config = load_config("fashion_mnist", "smoke")  # BatchNorm in every block.
  config.batch_size = 12
  # Plain SGD, so the comparison measures the replicas and not Adam's first steps, which turn
  # last-bit differences of gradients near zero into steps of +-learning_rate.
  config.optimizer = "sgd"
  config.learning_rate = 1e-5
  runs = {n: _train(config, n, num_steps=1) for n in (1, 2, 3)}
  _, one, start = runs[1]
  for n in (2, 3):
    strategy, trainer, _ = runs[n]
    for v1, v, w0 in zip(one.model.weights, trainer.model.weights, start):
      copies = _copies(strategy, v)
      for c in copies[1:]:  # Every replica holds the same value, moving statistics included.
        np.testing.assert_array_equal(c, copies[0], err_msg=v.path)
      # The same update as on one replica, to float32 rounding: measured 3.7e-6 of the update at
      # most (sums in another order); per-replica BatchNorm statistics differ by far more.
      moved = np.abs(v1.numpy() - w0).max()
      rounding = 8 * np.finfo(np.float32).eps * np.abs(w0).max()
      assert np.abs(copies[0] - v1.numpy()).max() <= 1e-4 * moved + rounding, v.path


def test_every_replica_keeps_the_same_state_under_adam():
  config = load_config("fashion_mnist", "smoke")
  config.batch_size = 12
  strategy, trainer, _ = _train(config, 3, num_steps=6)
  counters = [trainer.step, trainer.optimizer.iterations]
  for v in trainer.model.weights + trainer.optimizer.variables + counters:
    copies = _copies(strategy, v)
    for c in copies[1:]:
      np.testing.assert_array_equal(c, copies[0], err_msg=getattr(v, "path", v.name))
  assert int(trainer.step.numpy()) == 6 and int(trainer.optimizer.iterations.numpy()) == 6


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_a_step_all_reduces_the_gradients_once_and_broadcasts_nothing(name):
  traffic = replica_traffic_probe.step_traffic(name, replicas=2)
  config = load_config(name, "smoke")
  # BatchNorm follows every encoder conv and every decoder conv but the output layer.
  norm_channels = []
  if config.encoder.norm == "batch":
    norm_channels += config.encoder.filters
  if config.decoder.norm == "batch":
    norm_channels += config.decoder.filters[:-1]
  # The gradients and the loss in one all-reduce; each BatchNorm layer adds one all-reduce of its
  # sums, sums of squares and count in the forward pass, and that one's gradient in the backward.
  assert traffic["all_reduces"] == 1 + 2 * len(norm_channels)
  sizes = traffic["all_reduce_sizes"]
  # The gradients and the loss travel packed in one flat tensor.
  gradients = [s for s in sizes if s == [traffic["trainable_parameters"] + 1]]
  assert len(gradients) == 1
  statistics = sorted(sum(s) for s in sizes if s is not gradients[0])
  assert statistics == sorted(2 * [2 * c + 1 for c in norm_channels])
  # No step counter, optimizer iteration or statistic is broadcast from the first device.
  assert traffic["broadcasts"] == 0
  # ReductionToOneDevice moves each reduced tensor to the first device and back: nothing else
  # crosses devices.
  assert traffic["cross_device_edges"] == 2 * sum(len(s) for s in traffic["all_reduce_sizes"])


def _eval_stream(strategy, config):
  n = config.batch_size
  ds = tf.data.Dataset.from_tensors({
      "image": _images(n, seed=1), "eps": tf.zeros([n, config.latent_dim]),
      "mask": tf.ones([n]), "index": tf.range(n), "label": tf.zeros([n], tf.int32)}).repeat()
  return strategy.experimental_distribute_dataset(ds)


@pytest.mark.parametrize("replicas", [1, 2])
def test_train_and_eval_loops_are_traced_once(replicas):
  config = load_config("fashion_mnist", "smoke")
  strategy = _strategy(replicas)
  trainer = build_trainer(config, strategy)
  evaluator = build_evaluator(trainer)
  it = _stream(strategy, _images(4 * config.batch_size), config.batch_size)
  evals = _eval_stream(strategy, config)
  for n in (2, 2, 1, 3):  # The last loop of a run is often shorter.
    trainer.run_loop(it, n)
    evaluator.evaluate(evals, 2)
  assert trainer.train_loop.experimental_get_tracing_count() == 1
  assert evaluator.eval_loop.experimental_get_tracing_count() == 1


def test_noise_slice_takes_a_replica_id_known_only_at_run_time_under_xla():
  # On a TPU the replica id is a tensor inside the compiled step, not a Python number.
  noise = tf.function(lambda step, replica: steps.noise_for_replica(3, step, 8, 2, replica, 4),
                      jit_compile=True)
  full = tf.function(lambda step: steps.noise_for_replica(3, step, 8, 2, 0, 1),
                     jit_compile=True)
  step = tf.constant(5, tf.int64)
  rows = [noise(step, tf.constant(r)).numpy() for r in range(4)]
  assert all(r.shape == (2, 2) for r in rows)
  np.testing.assert_array_equal(np.concatenate(rows), full(step).numpy())


def test_whole_replica_step_compiles_as_a_tpu_would_compile_it():
  """XLA over the whole replica step: noise, BatchNorm all-reduces, update, counters, the skip."""
  config = load_config("fashion_mnist", "smoke")
  config.jit_compile = "false"  # Nothing compiled inside; the whole step is compiled below.
  config.skip_nonfinite_steps = 2  # The tf.cond that skips a non-finite step is compiled too.
  trainer = build_trainer(config, tf.distribute.get_strategy())
  compiled = tf.function(lambda images: trainer.replica_step({"image": images}), jit_compile=True)
  images = _images(config.batch_size)
  hlo = compiled.experimental_get_compiler_ir(images)(stage="hlo")
  assert "rng-bit-generator" in hlo or "philox" in hlo.lower() or "rng" in hlo  # Noise inside.
  compiled(images)
  compiled(images)
  assert int(trainer.step.numpy()) == 2 and int(trainer.optimizer.iterations.numpy()) == 2
  assert all(np.isfinite(v.numpy()).all() for v in trainer.model.weights)


@pytest.fixture(scope="module")
def idx_flags(tmp_path_factory):
  return cli.prepared_idx_data(str(tmp_path_factory.mktemp("replicas")), seed=4,
                               num_train=240, num_test=36)


def test_batchnorm_run_ends_at_the_same_eval_elbo_on_1_2_and_3_replicas(tmp_path, idx_flags):
  results = {}
  for n in (1, 2, 3):
    workdir = tmp_path / f"r{n}"
    proc = cli.run_main(
        "configs/fashion_mnist.py:smoke", str(workdir), "--config.dataset=fashion_mnist",
        *idx_flags, "--config.batch_size=12", "--config.num_train_steps=12",
        "--config.steps_per_loop=6", "--config.log_every_steps=6", "--config.eval_every_steps=12",
        "--config.checkpoint_every_steps=12", "--config.eval_num_examples=-1",
        f"--config.num_cpu_devices={n}", f"--config.strategy={'mirrored' if n > 1 else 'default'}",
        "--config.deterministic=true",
        # 3 replicas each gather their batches from their own copy of the images.
        f"--config.cache={'device' if n == 3 else 'auto'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ("held by each replica's device" in proc.stderr) == (n == 3)
    with open(os.path.join(workdir, "final_metrics.json")) as f:
      results[n] = json.load(f)
    assert results[n]["eval/examples"] == 36
  for n in (2, 3):
    np.testing.assert_allclose(results[n]["eval/elbo"], results[1]["eval/elbo"], rtol=1e-5)


def test_dynamic_binarisation_draws_the_same_global_batches_on_1_2_and_3_replicas(tmp_path):
  import datagen  # pylint: disable=g-import-not-at-top
  from vae_dist.data import sources  # pylint: disable=g-import-not-at-top
  from vae_dist.data import input_pipeline  # pylint: disable=g-import-not-at-top
  datagen.write_idx_dataset(tmp_path / "idx", num_train=60, num_test=12, seed=2)
  config = load_config("mnist", "smoke")
  config.dataset = "fashion_mnist"
  config.manual_dir = str(tmp_path / "idx")
  config.data_dir = str(tmp_path / "tfds")
  config.binarize = "dynamic"
  config.batch_size = 12
  builder = sources.load_builder(config)
  seen = {}
  for n in (1, 2, 3):
    strategy = _strategy(n)
    it = iter(strategy.distribute_datasets_from_function(
        input_pipeline.train_dataset_fn(builder, config, start_step=1)))
    seen[n] = [np.concatenate([r.numpy() for r in strategy.experimental_local_results(
        next(it)["image"])]) for _ in range(3)]
  assert set(np.unique(seen[1][0])) == {0.0, 1.0}
  for n in (2, 3):
    for a, b in zip(seen[1], seen[n]):
      np.testing.assert_array_equal(a, b)

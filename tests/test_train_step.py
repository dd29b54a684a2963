"""The train step under 1, 2 and 4 replicas: same update, losses that fall."""
import numpy as np
import tensorflow as tf

from conftest import build_trainer, load_config, mirrored


def _fixed_batches(strategy, images):
  ds = tf.data.Dataset.from_tensors({"image": images}).repeat()
  # experimental_distribute_dataset splits the global batch in order over the replicas.
  return iter(strategy.experimental_distribute_dataset(ds))


def _images(config, n, seed=0):
  """Binary images of one bright rectangle each: structured, so a VAE can learn them."""
  rng = np.random.default_rng(seed)
  size = config.image_size
  out = np.zeros((n, size, size, config.channels), np.float32)
  for i in range(n):
    h, w = rng.integers(size // 4, size // 2, size=2)
    top, left = rng.integers(0, size - h), rng.integers(0, size - w)
    out[i, top:top + h, left:left + w] = 1.0
  return tf.constant(out)


def _weights(model):
  return [v.numpy() for v in model.weights]


def test_one_step_on_one_and_two_replicas_gives_the_same_weights():
  config = load_config("mnist", "smoke")
  config.batch_size = 8
  # Plain SGD: the update is lr x gradient. (Adam's first step is lr x sign(gradient), which
  # turns the last-bit differences of a two-way sum into sign flips where gradients are ~0.)
  config.optimizer = "sgd"
  config.learning_rate = 0.01
  images = _images(config, 8)
  results = []
  for strategy in (tf.distribute.get_strategy(), mirrored(2)):
    trainer = build_trainer(config, strategy)
    before = _weights(trainer.model)
    trainer.train_loop(_fixed_batches(strategy, images), tf.constant(1))
    results.append((before, _weights(trainer.model), trainer.read_train_metrics()[0]))
  (b1, w1, m1), (b2, w2, m2) = results
  for a, b in zip(b1, b2):
    np.testing.assert_array_equal(a, b)  # Same initial weights from the same seed.
  changed = 0
  for a, b, start in zip(w1, w2, b1):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    changed += not np.allclose(a, start)
  assert changed > 0
  np.testing.assert_allclose(m1["train/loss"], m2["train/loss"], rtol=1e-5)
  np.testing.assert_allclose(m1["train/grad_norm"], m2["train/grad_norm"], rtol=1e-4)


def _losses_over_fixed_batch(config, strategy, loops=6, per_loop=5):
  trainer = build_trainer(config, strategy)
  it = _fixed_batches(strategy, _images(config, config.batch_size, seed=3))
  losses = []
  for _ in range(loops):
    trainer.train_loop(it, tf.constant(per_loop))
    metrics, _ = trainer.read_train_metrics()
    losses.append(metrics["train/loss"])
  assert int(trainer.step.numpy()) == loops * per_loop
  return losses


def test_loss_falls_over_a_few_dozen_steps_on_a_fixed_batch():
  config = load_config("mnist", "smoke")
  config.learning_rate = 3e-3
  losses = _losses_over_fixed_batch(config, tf.distribute.get_strategy())
  assert all(np.isfinite(losses))
  assert losses[-1] < 0.8 * losses[0], losses


def test_loss_falls_with_batchnorm_on_four_replicas():
  config = load_config("fashion_mnist", "smoke")
  config.learning_rate = 3e-3
  losses = _losses_over_fixed_batch(config, mirrored(4))
  assert all(np.isfinite(losses))
  assert losses[-1] < 0.8 * losses[0], losses


def test_nonfinite_gradients_are_recorded_with_their_step():
  config = load_config("mnist", "smoke")
  trainer = build_trainer(config, tf.distribute.get_strategy())
  images = _images(config, config.batch_size)
  it = _fixed_batches(tf.distribute.get_strategy(), images)
  trainer.train_loop(it, tf.constant(2))
  assert int(trainer.first_nonfinite_step.numpy()) == -1
  trainer.model.decoder.layers[-1].kernel.assign(
      np.full(trainer.model.decoder.layers[-1].kernel.shape, np.nan, np.float32))
  trainer.train_loop(it, tf.constant(2))
  assert int(trainer.first_nonfinite_step.numpy()) == 2

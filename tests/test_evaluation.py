"""The eval ELBO is exact: every test example once, whatever the batch and replica count."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import datagen
from conftest import load_config, mirrored
from vae_dist.data import eval_input
from vae_dist.data import input_pipeline
from vae_dist.data import sources
from vae_dist.model import objective
from vae_dist.train import evaluator
from vae_dist.train import state as train_state


@pytest.fixture(scope="module")
def fifty_test_examples(tmp_path_factory):
  root = tmp_path_factory.mktemp("idx")
  datagen.write_idx_dataset(root / "manual", num_train=64, num_test=50, seed=5)
  config = load_config("mnist", "smoke")
  config.dataset = "fashion_mnist"
  config.manual_dir = str(root / "manual")
  config.data_dir = str(root / "tfds")
  config.eval_num_examples = -1
  return config, sources.load_builder(config)


def _independent_elbo(model, builder, config):
  """One example at a time, NumPy formulas, the pipeline's fixed noise for example i."""
  total = 0.0
  ds = builder.as_dataset(split="test", shuffle_files=False)
  for i, example in enumerate(tfds.as_numpy(ds)):
    x = (example["image"].astype(np.float64) / 255.0 > 0.5).astype(np.float32)[None]
    mean, logvar = (t.numpy().astype(np.float64) for t in model.encode(x))
    eps = eval_input.eval_noise(i, config).numpy().astype(np.float64)[None]
    z = mean + np.exp(0.5 * logvar) * eps
    logits = model.decode(z.astype(np.float32)).numpy().astype(np.float64)
    log_p = -np.logaddexp(0.0, -logits)  # log sigmoid(l)
    log_1mp = -np.logaddexp(0.0, logits)  # log (1 - sigmoid(l))
    ll = (x * log_p + (1 - x) * log_1mp).sum()
    kl = 0.5 * (mean**2 + np.exp(logvar) - 1.0 - logvar).sum()
    total += ll - kl
  return total / (i + 1), i + 1


def test_eval_elbo_on_three_replicas_with_batch_7_equals_per_example_computation(
    fifty_test_examples):
  config, builder = fifty_test_examples
  # Per-replica batch 7 on 3 replicas: global eval batch 21, 3 steps, 13 padded slots.
  config.eval_batch_size = 21
  strategy = mirrored(3)
  config.seed = 1
  model = train_state.create_train_state(config, strategy, with_optimizer=False).model
  likelihood = objective.Likelihood.from_config(config)
  num_steps = eval_input.num_eval_steps(builder, config, 3, 1)
  assert num_steps == 3
  data = strategy.distribute_datasets_from_function(
      eval_input.eval_dataset_fn(builder, config, num_steps))
  metrics, _ = evaluator.Evaluator(strategy=strategy, model=model,
                                   likelihood=likelihood).evaluate(data, num_steps)
  assert metrics["eval/examples"] == 50

  want, n = _independent_elbo(model, builder, config)
  assert n == 50
  np.testing.assert_allclose(metrics["eval/elbo"], want, rtol=1e-4)

  # The same number on one replica with another batch size.
  config.eval_batch_size = 8
  single = tf.distribute.get_strategy()
  steps1 = eval_input.num_eval_steps(builder, config, 1, 1)
  data1 = single.distribute_datasets_from_function(
      eval_input.eval_dataset_fn(builder, config, steps1))
  model1 = train_state.create_train_state(config, single, with_optimizer=False).model
  model1.set_weights(model.get_weights())
  metrics1, _ = evaluator.Evaluator(strategy=single, model=model1,
                                    likelihood=likelihood).evaluate(data1, steps1)
  np.testing.assert_allclose(metrics1["eval/elbo"], want, rtol=1e-4)


def test_two_input_pipelines_cover_the_train_split_once_per_epoch(fifty_test_examples):
  config, builder = fifty_test_examples
  config.batch_size = 8
  config.binarize = "none"
  n = builder.info.splits["train"].num_examples
  seen = []
  for pipeline in range(2):
    ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline,
                                     num_replicas_in_sync=2)
    ds = input_pipeline.train_dataset_fn(builder, config, start_step=0)(ctx)
    *_, count = input_pipeline._train_file_instructions(builder, config, ctx)  # pylint: disable=protected-access
    batches = count // 4
    for batch in ds.take(batches):
      seen.extend(map(bytes, batch["image"].numpy()))  # uint8 (config.feed_dtype).
  all_images = [bytes(x["image"]) for x in tfds.as_numpy(builder.as_dataset(split="train"))]
  assert len(seen) == n == len(all_images)
  assert sorted(seen) == sorted(all_images)

"""Non-finite steps: stop at the first one, or skip up to config.skip_nonfinite_steps in a row.

The Trainer tests feed a stream with NaN in one example of some batches and check that a skipped
step leaves weights, optimizer slots and the optimizer's iteration count exactly as they were,
on one replica with the whole step under XLA and on two replicas. The command-line tests resume
from a checkpoint whose weights were made NaN and check what the user sees.
"""
import hashlib
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

import cli
import datagen
from conftest import build_trainer, load_config, mirrored
from vae_dist import checkpointing
from vae_dist.config import checks
from vae_dist.errors import ConfigError
from vae_dist.train import state as train_state

@pytest.mark.parametrize("value", [-1, True])  # ConfigDict refuses floats and strings.
def test_bad_skip_value_names_the_field(value):
  config = load_config("mnist", "smoke")
  config.skip_nonfinite_steps = value
  with pytest.raises(ConfigError, match=r"^config.skip_nonfinite_steps: must be an integer >= 0"):
    checks.validate(config)


# ---- Trainer -------------------------------------------------------------------------------------


def _stream(config, strategy, num_batches, nan_batches):
  """Batches of random binary images; one pixel of the first example of nan_batches is NaN.

  With two replicas only replica 0 sees the NaN: the all-reduce must carry it to replica 1.
  """
  rng = np.random.default_rng(0)
  shape = (num_batches, config.batch_size, config.image_size, config.image_size, config.channels)
  images = (rng.random(shape) < 0.3).astype(np.float32)
  images[list(nan_batches), 0, 0, 0, 0] = np.nan
  ds = tf.data.Dataset.from_tensor_slices({"image": images})
  return iter(strategy.experimental_distribute_dataset(ds))


def _state(trainer):
  """Every replica's copy of every weight and optimizer variable (iterations, slots, ...)."""
  out = []
  for v in list(trainer.model.weights) + list(trainer.optimizer.variables):
    v = getattr(v, "value", v)  # Keras variable -> its tf.Variable.
    out.extend(c.numpy() for c in trainer.strategy.experimental_local_results(v))
  return out


def _assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("replicas", [1, 2])
def test_skipped_step_changes_nothing_and_training_goes_on(replicas):
  config = load_config("mnist", "smoke")
  config.skip_nonfinite_steps = 2
  config.jit_compile = "true"
  strategy = tf.distribute.get_strategy() if replicas == 1 else mirrored(replicas)
  trainer = build_trainer(config, strategy)
  # The paths of Trainer.__init__: whole update under XLA on one replica, loss and grads on two.
  assert trainer.xla == ("whole replica update" if replicas == 1 else "loss and gradients")
  # NaN at step 2 alone, then at steps 5 and 6: two in a row reach the limit.
  it = _stream(config, strategy, num_batches=8, nan_batches=(2, 5, 6))
  trainer.run_loop(it, 2)
  before = _state(trainer)
  status = trainer.run_loop(it, 1)  # Step 2: skipped.
  _assert_same(_state(trainer), before)
  assert status.step == 3  # The data position and the noise still move on.
  assert int(trainer.optimizer.iterations.numpy()) == 2
  assert int(trainer.first_nonfinite_step.numpy()) == 2
  assert trainer.new_skipped_steps(status) == 1
  assert status.nonfinite_stop == -1

  status = trainer.run_loop(it, 2)  # Steps 3 and 4: finite again.
  assert int(trainer.optimizer.iterations.numpy()) == 4
  after = _state(trainer)
  assert all(np.isfinite(x).all() for x in after)
  assert any(not np.array_equal(x, y) for x, y in zip(after, before))
  metrics, _ = trainer.read_train_metrics()
  assert metrics["train/skipped_steps"] == 1
  assert np.isfinite(metrics["train/loss"]) and np.isfinite(metrics["train/grad_norm"])
  assert status.nonfinite_stop == -1  # One skip, then finite steps: the count restarts.
  assert trainer.new_skipped_steps(status) == 0

  status = trainer.run_loop(it, 3)  # Steps 5 and 6 skipped, 7 applied.
  assert int(trainer.optimizer.iterations.numpy()) == 5
  assert status.nonfinite_stop == 6
  assert trainer.new_skipped_steps(status) == 2
  metrics, _ = trainer.read_train_metrics()
  assert metrics["train/skipped_steps"] == 2
  assert np.isfinite(metrics["train/loss"])


def test_without_skipping_the_first_nonfinite_step_is_recorded():
  config = load_config("mnist", "smoke")
  assert config.skip_nonfinite_steps == 0
  config.jit_compile = "false"  # The XLA path is exercised above; this saves a compile.
  strategy = tf.distribute.get_strategy()
  trainer = build_trainer(config, strategy)
  status = trainer.run_loop(_stream(config, strategy, num_batches=5, nan_batches=(2, 3)), 5)
  assert int(trainer.first_nonfinite_step.numpy()) == 2
  assert status.nonfinite_stop == 2
  assert trainer.new_skipped_steps(status) == 0
  assert "train/skipped_steps" not in trainer.read_train_metrics()[0]


# ---- Command line --------------------------------------------------------------------------------

COMMON = ["--config.dataset=fashion_mnist", "--config.steps_per_loop=2",
          "--config.log_every_steps=2"]


@pytest.fixture(scope="module")
def healthy_run(tmp_path_factory):
  """Two steps with skip_nonfinite_steps=2 and a checkpoint at step 2."""
  root = tmp_path_factory.mktemp("faults")
  datagen.write_idx_dataset(root / "idx", num_train=48, num_test=16, seed=11)
  flags = cli.data_flags(str(root / "idx"), str(root / "tfds"))
  workdir = str(root / "healthy")
  proc = cli.run_main("configs/mnist.py:smoke", workdir, *COMMON, *flags,
                      "--config.num_train_steps=2", "--config.eval_every_steps=2",
                      "--config.checkpoint_every_steps=2", "--config.skip_nonfinite_steps=2",
                      "--config.num_scatter_examples=16")
  return root, flags, workdir, proc


def test_skipping_on_a_healthy_run_skips_nothing(healthy_run):
  _, _, workdir, proc = healthy_run
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Skipped" not in proc.stderr
  [line] = [r for r in cli.read_metrics(workdir) if "train/loss" in r]
  assert line["step"] == 2 and line["train/skipped_steps"] == 0
  assert np.isfinite(line["train/loss"])


def _poison(source, workdir):
  """Copies the run and commits a step 4 whose decoder output kernel is NaN, as `main` would."""
  shutil.copytree(source, workdir)
  config = load_config("mnist", "smoke")
  state = train_state.create_train_state(config, tf.distribute.get_strategy(), total_steps=8)
  model, step = state.model, state.step
  checkpoint = state.checkpoint()
  manager = checkpointing.CheckpointManager(directory=os.path.join(workdir, "checkpoints"))
  manager.restore(2, checkpoint)
  kernel = model.decoder.layers[-1].kernel
  kernel.assign(np.full(kernel.shape, np.nan, np.float32))
  step.assign(4)
  manager.save(4, checkpoint, {"num_replicas": 1})
  manager.wait_until_finished()


def _checkpoints(workdir):
  """Committed steps and a digest of every file under checkpoints/."""
  root = os.path.join(workdir, "checkpoints")
  digest = hashlib.sha256()
  for folder, dirs, files in sorted(os.walk(root)):
    dirs.sort()
    for name in sorted(files):
      path = os.path.join(folder, name)
      digest.update(path.encode())
      with open(path, "rb") as f:
        digest.update(f.read())
  return sorted(int(d) for d in os.listdir(root) if d.isdigit()), digest.hexdigest()


def _error_line(stderr):
  errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1, stderr[-3000:]
  assert "Traceback" not in stderr
  return errors[0]


LONGER = ["--config.num_train_steps=8", "--config.eval_every_steps=8",
          "--config.checkpoint_every_steps=8"]


@pytest.mark.parametrize("skip", [0, 3])
def test_nan_weights_stop_the_run_and_keep_the_checkpoints(tmp_path, healthy_run, skip):
  _, flags, source, proc = healthy_run
  assert proc.returncode == 0, proc.stderr[-3000:]
  workdir = str(tmp_path / "run")
  _poison(source, workdir)
  before = _checkpoints(workdir)
  assert before[0] == [2, 4]

  proc = cli.run_main("configs/mnist.py:smoke", workdir, *COMMON, *flags, *LONGER,
                      f"--config.skip_nonfinite_steps={skip}")
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "Resumed from" in proc.stderr
  error = _error_line(proc.stderr)
  if skip == 0:  # The first step after the resumed one.
    assert "became NaN or Inf at step 4; stopping." in error
  else:  # Steps 4, 5 and 6 were skipped; the run stopped at 6.
    assert "at 3 consecutive steps, the last at step 6; all 3 were skipped" in error
    assert "config.skip_nonfinite_steps=3" in error
    assert "Skipped 2 non-finite steps up to step 6" in proc.stderr
    assert "Skipped 2 non-finite steps up to step 8" in proc.stderr
    logged = [r for r in cli.read_metrics(workdir) if r["step"] > 4]
    assert [(r["step"], r["train/skipped_steps"]) for r in logged] == [(6, 2)]
    # No step applied since the last log point: no mean is written (and no NaN in the file).
    assert "train/loss" not in logged[0] and "train/elbo" not in logged[0]
  assert "Checkpoints already committed are unchanged" in error
  assert "config.learning_rate" in error
  assert _checkpoints(workdir) == before  # Still [2, 4], NaN step 4 the latest, bytes unchanged.

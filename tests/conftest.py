"""Test session setup: the host CPU is split into 4 logical devices before TensorFlow starts.

The default strategy still runs on CPU:0 alone; MirroredStrategy tests pick 2, 3 or 4 of the
devices, so one process covers every replica count. Tests of the command line run it in
subprocesses, which configure their own devices from the config.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

NUM_TEST_CPUS = 4
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_cpus[0],
                                           [tf.config.LogicalDeviceConfiguration()] * NUM_TEST_CPUS)


def load_config(name: str, arg=None):
  """configs/<name>.py's get_config(arg), loaded the way --config loads it."""
  import importlib.util
  path = os.path.join(ROOT, "configs", f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"configs_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg is not None else module.get_config()


def mirrored(n: int) -> tf.distribute.MirroredStrategy:
  """The pipeline's own MirroredStrategy over the first n logical CPUs."""
  from vae_dist.config import defaults
  from vae_dist.train import distribution
  config = defaults.base_config()
  config.num_cpu_devices = n
  return distribution.mirrored_strategy(config)


@pytest.fixture
def repo_root():
  return ROOT


def build_trainer(config, strategy):
  """A steps.Trainer as the train loop builds it, on the state of create_train_state."""
  from vae_dist.train import state as train_state  # pylint: disable=g-import-not-at-top
  from vae_dist.train import steps  # pylint: disable=g-import-not-at-top
  state = train_state.create_train_state(config, strategy, total_steps=100)
  return steps.Trainer(config=config, strategy=strategy, state=state)


def build_evaluator(trainer):
  """The Evaluator of a trainer's model, as the train loop builds it."""
  from vae_dist.train import evaluator  # pylint: disable=g-import-not-at-top
  return evaluator.Evaluator(strategy=trainer.strategy, model=trainer.model,
                             likelihood=trainer.likelihood)

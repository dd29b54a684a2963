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
  """A steps.Trainer as train.py builds it (optimizer built in the scope), seeded by the config."""
  from vae_dist.model import networks  # pylint: disable=g-import-not-at-top
  from vae_dist.train import steps  # pylint: disable=g-import-not-at-top
  tf.keras.utils.set_random_seed(config.seed)
  with strategy.scope():
    model = networks.VAE(config)
    optimizer = steps.create_optimizer(config, total_steps=100)
    optimizer.build(model.trainable_variables)
  return steps.Trainer(config=config, strategy=strategy, model=model, optimizer=optimizer)

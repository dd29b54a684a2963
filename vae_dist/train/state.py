"""The one factory of what a run trains: the model, its optimizer and the step counter.

Training, the tools, the benchmarks and the tests all build their state here, so the precision
policy, the seed, the variables' placement (inside the strategy's scope) and the checkpoint's
keys are decided in one place.
"""
import dataclasses
from typing import Optional

import ml_collections
import tensorflow as tf

from vae_dist.model import networks
from vae_dist.train import optimizers
from vae_dist.train import replica_vars

_POLICIES = {"none": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


@dataclasses.dataclass(frozen=True)
class TrainState:
  """A run's trainable state; everything in it lives in the strategy it was created under.

  Attributes:
    model: the VAE.
    optimizer: the Keras optimizer, built on the model's variables; None for a state that is
      only evaluated or sampled from.
    step: the replica-local train step counter, the whole random state of a run (noise,
      shuffling and binarisation derive from it).
  """
  model: networks.VAE
  optimizer: Optional[tf.keras.optimizers.Optimizer]
  step: tf.Variable

  def checkpoint(self) -> tf.train.Checkpoint:
    """The objects a checkpoint holds, under the keys every run and tool restores by."""
    items = {"model": self.model, "step": self.step}
    if self.optimizer is not None:
      items["optimizer"] = self.optimizer
    return tf.train.Checkpoint(**items)


def set_precision(mixed_precision: str) -> None:
  """Keras' global dtype policy for config.mixed_precision ('none', 'bfloat16', 'float16')."""
  tf.keras.mixed_precision.set_global_policy(_POLICIES[mixed_precision])


def create_train_state(config: ml_collections.ConfigDict, strategy: tf.distribute.Strategy, *,
                       total_steps: int = 1, with_optimizer: bool = True,
                       sums_over_replicas: bool = False,
                       mixed_precision: Optional[str] = None) -> TrainState:
  """Seeds, sets the precision policy and builds the state inside strategy.scope().

  Args:
    config: the run's config (model, optimizer, schedule, seed, precision).
    strategy: the strategy every variable is created under.
    total_steps: the run's length (the learning-rate schedule depends on it).
    with_optimizer: False for a state that is only evaluated or sampled from.
    sums_over_replicas: Keras' own optimizers, which sum per-replica gradients themselves (the
      benchmark's tutorial loop); by default gradients come summed (optimizers.create_optimizer).
    mixed_precision: overrides config.mixed_precision (the tools evaluate in float32).

  Returns:
    The TrainState. The optimizer is built here, inside the scope and before any traced step,
    so that its slots are mirrored like the weights (BUILD_NOTES.md, traps).
  """
  set_precision(mixed_precision or config.mixed_precision)
  # Python, NumPy, TensorFlow and Keras seeds, set right before the weights are drawn: preparing
  # a data set draws from them too (and creates random ops, which moves TensorFlow's op-seed
  # counter), so seeding earlier gave a run that prepared its data other initial weights than
  # the same command once the data was there. Everything random after this is stateless and
  # seeded explicitly (noise, shuffle, binarising).
  tf.keras.utils.set_random_seed(config.seed)
  with strategy.scope():
    model = networks.VAE(config)
    optimizer = None
    if with_optimizer:
      optimizer = optimizers.create_optimizer(config, total_steps,
                                              sums_over_replicas=sums_over_replicas)
      optimizer.build(model.trainable_variables)
    step = replica_vars.create_step_counter()
  return TrainState(model=model, optimizer=optimizer, step=step)

"""The optimizers a run trains with: Keras optimizers that take gradients already summed over
replicas, and the learning-rate schedules of the config.

This module holds the private Keras API the train step depends on (the gradient reduction hook
and the iteration counter's backing variable); vae_dist/private_api.md lists it with the rest.
"""
import ml_collections
import tensorflow as tf

keras = tf.keras


class _ReducedGradients:
  """Mixin for Keras optimizers that are handed gradients already summed over replicas, and that
  cost no cross-replica traffic besides those gradients.

  Keras 3's TensorFlow optimizer all-reduces the gradients inside `apply` whenever it runs in a
  replica context. The train step has reduced them once already (the norm, the clipping and the
  finiteness check need the global-batch gradient), so a second sum would double the traffic
  over NCCL / ICI / the data-centre network. Keras offers no public switch for this (Keras 2 had
  `experimental_aggregate_gradients=False`); this override of its one reduction hook, and the
  swap of the iteration counter's backing variable below, are private Keras API, named in
  BUILD_NOTES.md's traps; tests/test_replicas.py counts the all-reduces and broadcasts of a traced
  step, so a Keras upgrade that bypasses either fails there.
  """

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    # Keras counts its updates in a mirrored variable that every replica increments, which
    # MirroredStrategy turns into a broadcast from the first device at every step. A replica-local
    # variable holds the same number (every replica applies every update) at no traffic. It goes
    # inside the same Keras variable, so tracking and checkpoints see no difference.
    counter = self._iterations
    counter._value = tf.Variable(  # pylint: disable=protected-access
        tf.zeros([], counter.dtype), trainable=False, name="iteration",
        synchronization=tf.VariableSynchronization.ON_READ,
        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

  def _all_reduce_sum_gradients(self, grads_and_vars):
    return list(grads_and_vars)


class _PRE_REDUCED:  # pylint: disable=invalid-name
  """The optimizers create_optimizer offers, taking gradients already summed over replicas."""

  class Adam(_ReducedGradients, keras.optimizers.Adam):
    pass

  class AdamW(_ReducedGradients, keras.optimizers.AdamW):
    pass

  class SGD(_ReducedGradients, keras.optimizers.SGD):
    pass


def create_optimizer(config: ml_collections.ConfigDict, total_steps: int, *,
                     sums_over_replicas: bool = False) -> keras.optimizers.Optimizer:
  """The Keras optimizer with the config's schedule (and loss scaling for float16).

  By default it applies the gradients it is given as they are: the Trainer passes gradients
  already summed over replicas (see _ReducedGradients). sums_over_replicas=True gives Keras' own
  classes, which sum per-replica gradients inside `apply` (the benchmark's tutorial loop).
  """
  lr = config.learning_rate
  if config.lr_schedule == "cosine":
    lr = keras.optimizers.schedules.CosineDecay(
        0.0 if config.warmup_steps else lr,
        decay_steps=max(1, total_steps - config.warmup_steps),
        warmup_target=lr if config.warmup_steps else None,
        warmup_steps=config.warmup_steps)
  elif config.warmup_steps:
    lr = _LinearWarmup(lr, config.warmup_steps)
  optimizers = keras.optimizers if sums_over_replicas else _PRE_REDUCED
  if config.optimizer == "adam":
    opt = optimizers.Adam(lr)
  elif config.optimizer == "adamw":
    opt = optimizers.AdamW(lr, weight_decay=config.weight_decay)
  else:
    opt = optimizers.SGD(lr, momentum=0.9)
  if config.mixed_precision == "float16":
    opt = keras.optimizers.LossScaleOptimizer(opt)
  return opt


class _LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):

  def __init__(self, lr, warmup_steps):
    self.lr = lr
    self.warmup_steps = warmup_steps

  def __call__(self, step):
    frac = tf.minimum(1.0, tf.cast(step + 1, tf.float32) / self.warmup_steps)
    return self.lr * frac

  def get_config(self):
    return {"lr": self.lr, "warmup_steps": self.warmup_steps}


def current_learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
  """The learning rate the optimizer applies now (its schedule at its iteration count)."""
  inner = getattr(optimizer, "inner_optimizer", optimizer)
  lr = inner.learning_rate
  return float(lr.numpy() if hasattr(lr, "numpy") else lr)



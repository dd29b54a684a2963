"""The train and eval steps, and the host loops that run many of them inside one tf.function.

Everything here works the same under every tf.distribute strategy: a per-replica function run with
`strategy.run`, metric sums kept in ON_READ/SUM variables (each replica adds to its own copy; reading
in cross-replica context sums them), so the host loop never adds a device-to-host sync per step.
"""
import ml_collections
import tensorflow as tf

from vae_dist import objective

keras = tf.keras

TRAIN_SUMS = ("loss", "recon", "kl", "elbo", "examples", "grad_norm", "steps", "skipped")


def create_optimizer(config: ml_collections.ConfigDict, total_steps: int):
  """The Keras optimizer with the config's schedule (and loss scaling for float16)."""
  lr = config.learning_rate
  if config.lr_schedule == "cosine":
    lr = keras.optimizers.schedules.CosineDecay(
        0.0 if config.warmup_steps else lr,
        decay_steps=max(1, total_steps - config.warmup_steps),
        warmup_target=lr if config.warmup_steps else None,
        warmup_steps=config.warmup_steps)
  elif config.warmup_steps:
    lr = _LinearWarmup(lr, config.warmup_steps)
  if config.optimizer == "adam":
    opt = keras.optimizers.Adam(lr)
  elif config.optimizer == "adamw":
    opt = keras.optimizers.AdamW(lr, weight_decay=config.weight_decay)
  else:
    opt = keras.optimizers.SGD(lr, momentum=0.9)
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


def current_learning_rate(optimizer):
  inner = getattr(optimizer, "inner_optimizer", optimizer)
  lr = inner.learning_rate
  return float(lr.numpy() if hasattr(lr, "numpy") else lr)


class MetricSums:
  """Named float32 sums, one copy per replica, summed over replicas when read."""

  def __init__(self, shapes: dict):
    self._vars = {
        name: tf.Variable(
            tf.zeros(shape, tf.float32),
            trainable=False,
            synchronization=tf.VariableSynchronization.ON_READ,
            aggregation=tf.VariableAggregation.SUM,
            name=f"sum_{name}") for name, shape in shapes.items()
    }

  def add(self, values: dict):
    """Called in replica context."""
    for name, value in values.items():
      self._vars[name].assign_add(tf.cast(value, tf.float32))

  def read(self) -> dict:
    """Called in cross-replica context: returns numpy sums over all replicas (and hosts)."""
    return {name: v.read_value().numpy() for name, v in self._vars.items()}

  def reset(self):
    for name, v in self._vars.items():
      v.assign(tf.zeros_like(v.read_value()))


def _replica_local_int(value: int, name: str) -> tf.Variable:
  """An int64 scalar that each replica updates on its own copy; reads give the first replica's."""
  return tf.Variable(
      tf.constant(value, tf.int64), trainable=False,
      synchronization=tf.VariableSynchronization.ON_READ,
      aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA, name=name)


def noise_for_replica(seed: int, step, global_batch: int, latent_dim: int):
  """This replica's slice of the step's global-batch noise.

  All replicas draw the same [global_batch, latent] stateless noise from (seed, step) and take
  their own rows, so training does not depend on how the global batch is split across replicas,
  XLA ignores no seed (stateless ops), and a resumed run draws exactly the noise it would have.
  It is drawn outside XLA (see Trainer): XLA's stateless generators give other numbers than the
  TensorFlow kernels for the same seed, and the noise must not depend on jit_compile.
  """
  ctx = tf.distribute.get_replica_context()
  per_replica = global_batch // ctx.num_replicas_in_sync
  full = tf.random.stateless_normal([global_batch, latent_dim],
                                    seed=tf.stack([tf.constant(seed, tf.int64), step]),
                                    alg="philox")
  start = tf.cast(ctx.replica_id_in_sync_group, tf.int32) * per_replica
  return full[start:start + per_replica]


def kl_weight(config: ml_collections.ConfigDict, step):
  if config.kl_warmup_steps <= 0:
    return tf.constant(config.beta, tf.float32)
  frac = tf.minimum(1.0, tf.cast(step + 1, tf.float32) / config.kl_warmup_steps)
  return config.beta * frac


class Trainer:
  """Builds the train loop and eval loop for one model, optimizer and strategy.

  Args (keyword-only):
    config: the run's config.
    strategy: the tf.distribute strategy everything was created under.
    model: a models.VAE created in strategy.scope().
    optimizer: created by create_optimizer in strategy.scope() and built on the model's variables.
    step: int64 tf.Variable counting train steps (created in strategy.scope()).
  """

  def __init__(self, *, config, strategy, model, optimizer, step):
    self.config = config
    self.strategy = strategy
    self.model = model
    self.optimizer = optimizer
    self.step = step
    self.global_batch = config.batch_size
    latent = config.latent_dim
    with strategy.scope():
      self.train_sums = MetricSums({name: [] for name in TRAIN_SUMS} | {"kl_per_dim": [latent]})
      self.eval_sums = MetricSums({
          "recon": [], "kl": [], "elbo": [], "examples": [], "kl_per_dim": [latent]})
      # The first step whose loss or gradients were not finite (-1: none so far).
      self.first_nonfinite_step = tf.Variable(
          tf.constant(-1, tf.int64), trainable=False,
          aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA, name="first_nonfinite_step")
      # config.skip_nonfinite_steps: the current run of non-finite steps, the steps skipped so
      # far, and the step that ended a run of skip_limit of them (-1: none yet). Every replica
      # computes the same values from all-reduced numbers, so replica-local copies stay equal
      # without a cross-replica sync per step.
      self.nonfinite_streak = _replica_local_int(0, "nonfinite_streak")
      self.skipped_steps = _replica_local_int(0, "skipped_steps")
      self.skip_stop_step = _replica_local_int(-1, "skip_stop_step")
    self._loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    # float16's LossScaleOptimizer skips overflow steps itself (and halves its scale).
    self.skip_limit = 0 if self._loss_scaled else config.skip_nonfinite_steps
    self._skipped_reported = 0

    num_replicas = strategy.num_replicas_in_sync
    # XLA: the whole replica step on one replica; with several replicas the all-reduce and the
    # optimizer update on mirrored variables cannot live inside one XLA cluster on TF 2.21
    # ("resource on CPU:1 from CPU:0"), so only the loss-and-gradient part is compiled. TPUStrategy
    # compiles everything itself and must not get jit_compile.
    is_tpu = isinstance(strategy, (tf.distribute.TPUStrategy,))
    self._jit_whole_step = config.jit_compile and num_replicas == 1 and not is_tpu
    self._jit_grads = config.jit_compile and num_replicas > 1 and not is_tpu
    grads_fn = self._loss_and_grads
    if self._jit_grads:
      grads_fn = tf.function(grads_fn, jit_compile=True)
    self._grads_fn = grads_fn
    update = self._update
    if self._jit_whole_step:
      update = tf.function(update, jit_compile=True)
    self._update_fn = update
    self.train_loop = tf.function(self._train_loop)
    self.eval_loop = tf.function(self._eval_loop)

  # ---- training -------------------------------------------------------------------------------

  def _loss_and_grads(self, images, eps, beta):
    model = self.model
    with tf.GradientTape() as tape:
      terms = objective.elbo_terms(model, images, eps, training=True, config=self.config)
      per_example = terms["recon"] + beta * terms["kl"]
      # Sum over this replica's examples divided by the GLOBAL batch: after the cross-replica
      # sum the gradient is the mean over the global batch, whatever the replica count.
      loss = tf.reduce_sum(per_example) / self.global_batch
      scaled = loss
      if self._loss_scaled:
        scaled = self.optimizer.scale_loss(loss)
    grads = tape.gradient(scaled, model.trainable_variables)
    sums = {
        "loss": tf.reduce_sum(per_example),
        "recon": tf.reduce_sum(terms["recon"]),
        "kl": tf.reduce_sum(terms["kl"]),
        "elbo": tf.reduce_sum(terms["elbo"]),
        "kl_per_dim": tf.reduce_sum(terms["kl_per_dim"], axis=0),
    }
    return grads, sums

  def _replica_step(self, images, step):
    # Never compiled: the noise comes from the TensorFlow kernels whatever jit_compile says.
    eps = noise_for_replica(self.config.seed, step, self.global_batch, self.config.latent_dim)
    self._update_fn(images, eps, kl_weight(self.config, step), step)

  def _update(self, images, eps, beta, step):
    config = self.config
    ctx = tf.distribute.get_replica_context()
    grads, sums = self._grads_fn(images, eps, beta)
    # Reduce the gradients here rather than inside the optimizer so the norm, the clipping and
    # the finiteness check see the global-batch gradient. The loss rides along so that the check
    # sees the global loss too (one replica's NaN loss need not show in the gradients).
    *grads, loss = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [*grads, sums["loss"]])
    norm = tf.linalg.global_norm(grads)
    if self._loss_scaled:
      norm = norm / tf.cast(self.optimizer.dynamic_scale, norm.dtype)
    elif config.grad_clip_norm > 0:
      grads, _ = tf.clip_by_global_norm(grads, config.grad_clip_norm, use_norm=norm)
    # Computed from reduced values only, so every replica takes the same view.
    finite = tf.logical_and(tf.math.is_finite(norm), tf.math.is_finite(loss))
    # The Keras optimizer sums gradients over replicas once more; hand it each replica's share of
    # the already-reduced sum so that second sum restores it (public API only, no private hooks).
    share = 1.0 / ctx.num_replicas_in_sync
    self._apply(ctx, [g * share for g in grads], finite)
    # Replica-identical values are added as shares so that the sum over replicas counts them once.
    sums["grad_norm"] = norm * share
    sums["examples"] = tf.cast(tf.shape(images)[0], tf.float32)
    sums["steps"] = share
    if self.skip_limit:
      # A skipped step's NaN must not poison the logged means: it is left out of every sum.
      sums = {name: tf.where(finite, value, tf.zeros_like(value)) for name, value in sums.items()}
      sums["skipped"] = tf.where(finite, 0.0, share)
    self.train_sums.add(sums)
    if not self._loss_scaled:
      # float16 overflow is expected and handled by the loss scale; anything else is recorded.
      self._record_nonfinite(finite, step)

  def _apply(self, ctx, grads, finite):
    """The optimizer update; with skip_limit, none at all when `finite` is False."""
    variables = self.model.trainable_variables

    def apply(grads):
      self.optimizer.apply(grads, variables)

    if not self.skip_limit:
      apply(grads)
      return
    # A real skip: weights, slots and the optimizer's iteration count stay as they are (zero
    # gradients would not do: Adam's momentum would still move the weights). `finite` is the
    # same on every replica, so all replicas take the same branch.
    if tf.__internal__.distribute.strategy_supports_no_merge_call():
      tf.cond(finite, lambda: apply(grads), lambda: None)
      return

    # Mirrored and one-device strategies update variables through merge_call, which a cond
    # branch in replica context cannot hold: branch in cross-replica context and run the update
    # per replica from there, as Keras's LossScaleOptimizer does.
    def cross_replica(strategy, finite, grads):
      first = strategy.experimental_local_results(finite)[0]
      tf.cond(first,
              lambda: strategy.extended.call_for_each_replica(apply, args=(grads,)),
              lambda: None)

    ctx.merge_call(cross_replica, args=(finite, grads))

  def _record_nonfinite(self, finite, step):
    bad = tf.logical_and(tf.logical_not(finite), self.first_nonfinite_step < 0)
    self.first_nonfinite_step.assign(tf.where(bad, step, self.first_nonfinite_step))
    if not self.skip_limit:
      return
    zero = tf.constant(0, tf.int64)
    streak = tf.where(finite, zero, self.nonfinite_streak + 1)
    self.nonfinite_streak.assign(streak)
    self.skipped_steps.assign_add(tf.where(finite, zero, 1))
    stop = tf.logical_and(streak >= self.skip_limit, self.skip_stop_step < 0)
    self.skip_stop_step.assign(tf.where(stop, step, self.skip_stop_step))

  def nonfinite_stop_step(self) -> int:
    """The step at which non-finite values end the run, or -1; read between host loops.

    The first non-finite step when skip_limit is 0, else the last of skip_limit consecutive ones.
    """
    if not self.skip_limit:
      return int(self.first_nonfinite_step.numpy())
    return int(self.skip_stop_step.numpy())

  def new_skipped_steps(self) -> int:
    """Steps skipped since the previous call; read between host loops."""
    if not self.skip_limit:
      return 0
    total = int(self.skipped_steps.numpy())
    new, self._skipped_reported = total - self._skipped_reported, total
    return new

  def _train_loop(self, iterator, num_steps):
    for _ in tf.range(num_steps):
      images = next(iterator)["image"]
      self.strategy.run(self._replica_step, args=(images, self.step.read_value()))
      self.step.assign_add(1)

  # ---- evaluation -----------------------------------------------------------------------------

  def _replica_eval(self, batch):
    terms = objective.elbo_terms(
        self.model, batch["image"], batch["eps"], training=False, config=self.config)
    mask = batch["mask"]
    self.eval_sums.add({
        "recon": tf.reduce_sum(terms["recon"] * mask),
        "kl": tf.reduce_sum(terms["kl"] * mask),
        "elbo": tf.reduce_sum(terms["elbo"] * mask),
        "examples": tf.reduce_sum(mask),
        "kl_per_dim": tf.reduce_sum(terms["kl_per_dim"] * mask[:, None], axis=0),
    })

  def _eval_loop(self, iterator, num_steps):
    for _ in tf.range(num_steps):
      self.strategy.run(self._replica_eval, args=(next(iterator),))

  def evaluate(self, dist_dataset, num_steps: int) -> dict:
    """Exact ELBO over the eval split: every example once, padding masked out."""
    self.eval_sums.reset()
    self.eval_loop(iter(dist_dataset), tf.constant(num_steps, tf.int32))
    s = self.eval_sums.read()
    n = max(float(s["examples"]), 1.0)
    kl_dims = s["kl_per_dim"] / n
    metrics = {
        "eval/elbo": float(s["elbo"]) / n,
        "eval/recon": float(s["recon"]) / n,
        "eval/kl": float(s["kl"]) / n,
        "eval/bits_per_dim": float(objective.bits_per_dim(float(s["elbo"]) / n, self.config)),
        "eval/examples": float(s["examples"]),
        "eval/active_units": float((kl_dims > 0.01).sum()),
    }
    return metrics, kl_dims

  def read_train_metrics(self) -> dict:
    s = self.train_sums.read()
    n = max(float(s["examples"]), 1.0)
    steps = max(float(s["steps"]), 1e-9)
    self.train_sums.reset()
    metrics = {
        "train/loss": float(s["loss"]) / n,
        "train/recon": float(s["recon"]) / n,
        "train/kl": float(s["kl"]) / n,
        "train/elbo": float(s["elbo"]) / n,
        "train/grad_norm": float(s["grad_norm"]) / steps,
    }
    if self.skip_limit:
      # Sums of replica shares: round away the float error of 1/num_replicas.
      metrics["train/skipped_steps"] = float(round(float(s["skipped"])))
      if s["examples"] == 0:
        # Every step since the last log point was skipped: no mean exists, so none is written
        # (a NaN would also make metrics.jsonl unreadable for strict JSON readers).
        metrics = {"train/skipped_steps": metrics["train/skipped_steps"]}
    return metrics, s["kl_per_dim"] / n


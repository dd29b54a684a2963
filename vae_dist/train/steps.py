"""The train step, and the host loop that runs many of them inside one tf.function.

Everything here works the same under every tf.distribute strategy: a per-replica function run with
`strategy.run`, metric sums kept in ON_READ/SUM variables (each replica adds to its own copy; reading
in cross-replica context sums them), so the host loop never adds a device-to-host sync per step.
Evaluation is evaluator.py's.
"""
from typing import NamedTuple

import ml_collections
import tensorflow as tf

from vae_dist.data import device_data
from vae_dist.data import input_pipeline
from vae_dist.model import objective
from vae_dist.train import distribution
from vae_dist.train import replica_vars
from vae_dist.train import state as train_state

keras = tf.keras

TRAIN_SUMS = ("loss", "recon", "kl", "elbo", "examples", "grad_norm", "steps", "skipped")


def use_xla(jit_compile: str, strategy: tf.distribute.Strategy) -> bool:
  """Whether the trainer wraps its steps in XLA (config.jit_compile: 'auto', 'true', 'false').

  'auto' compiles on GPUs and not on CPUs, where XLA's convolutions are slower than oneDNN's
  (tutorial model at batch 32: 0.81-0.90x the speed of the tutorial's own loop with XLA, 1.17x
  without; BUILD_NOTES.md "Speed"). TPUStrategy compiles every step itself and must not get
  jit_compile, so the answer there is False whatever the setting.
  """
  if isinstance(strategy, tf.distribute.TPUStrategy):
    return False
  setting = str(jit_compile).lower()
  if setting != "auto":
    return setting == "true"
  try:
    devices = list(strategy.extended.worker_devices)
  except RuntimeError:  # The default strategy: TensorFlow's own placement.
    devices = [d.name for d in tf.config.list_logical_devices("GPU")[:1]]
  return any("GPU" in d.upper() for d in devices)


def noise_for_replica(seed: int, step: tf.Tensor, global_batch: int, latent_dim: int,
                      replica_id, num_replicas: int) -> tf.Tensor:
  """This replica's slice of the step's global-batch noise.

  All replicas draw the same [global_batch, latent] stateless noise from (seed, step) and take
  their own rows, so training does not depend on how the global batch is split across replicas,
  XLA ignores no seed (stateless ops), and a resumed run draws exactly the noise it would have.
  `replica_id` may be a Python int (MirroredStrategy) or a tensor known only at run time (TPU);
  the slice has a static size either way. Outside TPUs it is drawn outside XLA (see Trainer):
  XLA's stateless generators give other numbers than the TensorFlow kernels for the same seed,
  and the noise must not depend on jit_compile.
  """
  per_replica = global_batch // num_replicas
  full = tf.random.stateless_normal([global_batch, latent_dim],
                                    seed=tf.stack([tf.constant(seed, tf.int64), step]),
                                    alg="philox")
  start = tf.cast(replica_id, tf.int32) * per_replica
  return tf.slice(full, tf.stack([start, 0]), [per_replica, latent_dim])


def _all_reduce_packed(ctx, tensors):
  """Sums float32 tensors over replicas as ONE flat tensor, and gives them back in their shapes.

  One transfer each way instead of one per variable: ReductionToOneDevice (CPUs) moves every
  tensor it is given separately, and a single message is what NCCL and the TPU interconnect
  prefer too.
  """
  flat = tf.concat([tf.reshape(t, [-1]) for t in tensors], axis=0)
  flat = ctx.all_reduce(tf.distribute.ReduceOp.SUM, flat)
  sizes = [t.shape.num_elements() for t in tensors]
  return [tf.reshape(part, t.shape) for part, t in zip(tf.split(flat, sizes), tensors)]


def kl_weight(beta: float, warmup_steps: int, step: tf.Tensor) -> tf.Tensor:
  """The KL term's weight at `step`: beta, reached linearly over warmup_steps (0: from step 0)."""
  if warmup_steps <= 0:
    return tf.constant(beta, tf.float32)
  frac = tf.minimum(1.0, tf.cast(step + 1, tf.float32) / warmup_steps)
  return beta * frac


def run_steps(strategy, iterator, num_steps, steps_per_element: int, replica_step,
              device_part=None) -> None:
  """num_steps calls of replica_step(batch[, part]) on every replica, fed from `iterator`; in graph.

  Elements hold one step's batch ({"image": [B, ...]}, or with cache='device' the row numbers
  of input_pipeline.row_element) or, with k = steps_per_element > 1, the next k steps' (every
  value stacked [k, ...]): ceil(num_steps / k) elements are read, and a last partial element is
  left unused. `device_part` (cache='device': each replica's copy of the images) is passed on.
  """
  k = steps_per_element
  part = () if device_part is None else (device_part,)
  if k == 1:
    for _ in tf.range(num_steps):
      strategy.run(replica_step, args=(next(iterator), *part))
    return

  def step_of_element(element, index, *part):
    replica_step(tf.nest.map_structure(lambda value: value[index], element), *part)

  for first in tf.range(0, num_steps, k):
    element = next(iterator)
    for index in tf.range(tf.minimum(k, num_steps - first)):
      strategy.run(step_of_element, args=(element, index, *part))


class LoopStatus(NamedTuple):
  """What one host loop reports, read from the device in one transfer."""
  step: int  # The step counter after the loop.
  # The step at which non-finite values end the run, or -1: the first non-finite step when
  # skip_nonfinite_steps is 0, else the last of that many consecutive ones.
  nonfinite_stop: int
  skipped: int  # Non-finite steps skipped so far in this process (skip_nonfinite_steps > 0).


class Trainer:
  """Builds the train loop for one train state and strategy.

  Args (keyword-only):
    config: the run's config.
    strategy: the tf.distribute strategy the state was created under.
    state: from state.create_train_state (model, optimizer built in the scope, step counter).
    steps_per_element: k, the train steps each element of the loop's iterator carries: 1 for
      {"image": [B, ...]}, k > 1 for {"image": [k, B, ...]} (input_pipeline.train_dataset_fn).

  With cache='device' set `device_part` (device_data.HostParts.place) before the first loop:
  the iterator then gives row numbers, and each replica gathers its batch from its own copy.
  """

  def __init__(self, *, config: ml_collections.ConfigDict, strategy: tf.distribute.Strategy,
               state: "train_state.TrainState", steps_per_element: int = 1):
    self.config = config
    self.steps_per_element = steps_per_element
    # The examples one host's replicas take per step: with cache='device' a step binarises its
    # rows as part of that block, as the host pipeline does.
    self.host_batch = config.batch_size // distribution.num_input_pipelines(strategy)
    self.device_part = None
    self.strategy = strategy
    self.model = state.model
    self.optimizer = optimizer = state.optimizer
    self.step = state.step
    self.likelihood = objective.Likelihood.from_config(config)
    self.global_batch = config.batch_size
    latent = config.latent_dim
    with strategy.scope():
      self.train_sums = replica_vars.MetricSums(
          {name: [] for name in TRAIN_SUMS} | {"kl_per_dim": [latent]})
      # The first step whose loss or gradients were not finite (-1: none so far).
      self.first_nonfinite_step = replica_vars.replica_local_int(-1, "first_nonfinite_step")
      # config.skip_nonfinite_steps: the current run of non-finite steps, the steps skipped so
      # far, and the step that ended a run of skip_limit of them (-1: none yet).
      self.nonfinite_streak = replica_vars.replica_local_int(0, "nonfinite_streak")
      self.skipped_steps = replica_vars.replica_local_int(0, "skipped_steps")
      self.skip_stop_step = replica_vars.replica_local_int(-1, "skip_stop_step")
    if self.step.synchronization != tf.VariableSynchronization.ON_READ:
      raise ValueError("Trainer needs the step counter of state.create_train_state.")
    self._loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    # float16's LossScaleOptimizer skips overflow steps itself (and halves its scale).
    self.skip_limit = 0 if self._loss_scaled else config.skip_nonfinite_steps
    self._skipped_reported = 0

    num_replicas = strategy.num_replicas_in_sync
    # XLA: the whole replica update on one replica; with several replicas the all-reduce and the
    # optimizer update on mirrored variables cannot live inside one XLA cluster on TF 2.21
    # ("resource on CPU:1 from CPU:0"), so only the loss-and-gradient part is compiled. Under
    # TPUStrategy use_xla is False: the TPU compiles the whole replica step itself.
    xla = use_xla(config.jit_compile, strategy)
    self.xla = ("whole replica update" if xla and num_replicas == 1 else
                "loss and gradients" if xla else "none")
    grads_fn = self._loss_and_grads
    if xla and num_replicas > 1:
      grads_fn = tf.function(grads_fn, jit_compile=True)
    self._grads_fn = grads_fn
    update = self._update
    if xla and num_replicas == 1:
      update = tf.function(update, jit_compile=True)
    self._update_fn = update
    self.train_loop = tf.function(self._train_loop)

  # ---- training -------------------------------------------------------------------------------

  def _loss_and_grads(self, images, eps, beta):
    model = self.model
    with tf.GradientTape() as tape:
      terms = objective.elbo_terms(model, images, eps, training=True, likelihood=self.likelihood)
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

  def replica_step(self, batch, device_part=None):
    """One train step on this replica's share of the global batch; advances the step counter.

    `batch` is the iterator's element for this step: {"image": images}, or with cache='device'
    row numbers that select the images from `device_part`, this replica's copy of them.
    Outside TPUs never compiled as a whole: the noise comes from the TensorFlow kernels whatever
    jit_compile says. TPUStrategy compiles all of it (tests/test_replicas.py compiles it with XLA
    on the CPU the same way).
    """
    if device_part is None:
      images = batch["image"]
    else:
      images = device_data.batch_images(device_part, batch, self.config, self.host_batch)
    images = input_pipeline.model_input(images, self.config)  # uint8 from the host -> float32.
    ctx = tf.distribute.get_replica_context()
    step = self.step.read_value()  # This replica's own copy: no cross-replica read.
    eps = noise_for_replica(self.config.seed, step, self.global_batch, self.config.latent_dim,
                            ctx.replica_id_in_sync_group, ctx.num_replicas_in_sync)
    self._update_fn(images, eps,
                    kl_weight(self.config.beta, self.config.kl_warmup_steps, step), step)
    self.step.assign_add(1)

  def _update(self, images, eps, beta, step):
    config = self.config
    ctx = tf.distribute.get_replica_context()
    grads, sums = self._grads_fn(images, eps, beta)
    # Reduce the gradients here rather than inside the optimizer so the norm, the clipping and
    # the finiteness check see the global-batch gradient. The loss rides along so that the check
    # sees the global loss too (one replica's NaN loss need not show in the gradients).
    *grads, loss = _all_reduce_packed(ctx, [*grads, sums["loss"]])
    norm = tf.linalg.global_norm(grads)
    if self._loss_scaled:
      norm = norm / tf.cast(self.optimizer.dynamic_scale, norm.dtype)
    elif config.grad_clip_norm > 0:
      grads, _ = tf.clip_by_global_norm(grads, config.grad_clip_norm, use_norm=norm)
    # Computed from reduced values only, so every replica takes the same view.
    finite = tf.logical_and(tf.math.is_finite(norm), tf.math.is_finite(loss))
    # The optimizer applies these summed gradients as they are (create_optimizer).
    self._apply(ctx, grads, finite)
    share = 1.0 / ctx.num_replicas_in_sync
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

  def new_skipped_steps(self, status: "LoopStatus") -> int:
    """Steps skipped since the previous call, from the status of the loop just run."""
    new, self._skipped_reported = status.skipped - self._skipped_reported, status.skipped
    return new

  def _train_loop(self, iterator, num_steps, device_part=None):
    """num_steps train steps; returns [step, non-finite stop step, steps skipped so far].

    The host reads that one small tensor per loop: the loop's only device-to-host sync.
    With k steps per element the loop reads ceil(num_steps / k) elements; a full host loop
    (a multiple of k steps, step_elements.steps_per_element) uses every batch it reads, and a
    shorter last one leaves the rest of its last element unused: nothing reads on after it.
    """
    run_steps(self.strategy, iterator, num_steps, self.steps_per_element, self.replica_step,
              device_part)
    stop = self.skip_stop_step if self.skip_limit else self.first_nonfinite_step
    return tf.stack([self.step.read_value(), stop.read_value(), self.skipped_steps.read_value()])

  def loop_graph(self, iterator, num_steps: tf.Tensor) -> tf.Graph:
    """The host loop's graph, traced for this iterator (run_loop's calls reuse it)."""
    return self.train_loop.get_concrete_function(iterator, num_steps, self.device_part).graph

  def run_loop(self, iterator, num_steps: int) -> "LoopStatus":
    """Runs num_steps train steps and waits for them; what the host loop needs to go on."""
    status = self.train_loop(iterator, tf.constant(num_steps, tf.int32), self.device_part)
    return LoopStatus(*(int(v) for v in status.numpy()))

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


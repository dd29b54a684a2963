"""train_and_evaluate: the whole run, from config checks to the final evaluation.

The order matters: everything that can be wrong with the config, the devices or the data is found
before the workdir is touched or a step is traced.
"""
import hashlib
import json
import re

from absl import logging
import ml_collections
import tensorflow as tf
import tensorflow_datasets as tfds

import vae_dist
from vae_dist import checkpointing
from vae_dist.config import checks
from vae_dist.config import compatibility
from vae_dist.config import memory_estimate
from vae_dist.data import device_data
from vae_dist.data import eval_input
from vae_dist.data import input_pipeline
from vae_dist.data import sources
from vae_dist.data import step_elements
from vae_dist.errors import CheckpointError
from vae_dist.errors import DamagedCheckpointError
from vae_dist.errors import DataError
from vae_dist.errors import RunPreempted
from vae_dist.errors import TrainingError
from vae_dist.errors import VaeDistError
from vae_dist.errors import WorkdirError
from vae_dist import fileio
from vae_dist.report import progress
from vae_dist.report import run_info
from vae_dist.report import run_summaries
from vae_dist import run_files
from vae_dist.train import actions
from vae_dist.train import distribution
from vae_dist.train import evaluator as train_evaluator
from vae_dist.train import preemption
from vae_dist.train import state as train_state
from vae_dist.train import steps
from vae_dist.train import workdir_lock


def config_hash(config: ml_collections.ConfigDict) -> str:
  """16 hex digits of the config's SHA-256, recorded in every checkpoint's metadata."""
  return hashlib.sha256(config.to_json(sort_keys=True).encode()).hexdigest()[:16]


def total_train_steps(config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder) -> int:
  """config.num_train_steps, or num_epochs of the train split's full global batches."""
  if config.num_train_steps > 0:
    return config.num_train_steps
  examples = builder.info.splits[config.train_split].num_examples
  return config.num_epochs * (examples // config.batch_size)


def _check_tensorflow_version():
  """setup.py asks for TF 2.20-2.21, but an image's own TF (VAE_DIST_TF_PROVIDED=1) may be older."""
  version = tuple(int(p) for p in re.findall(r"\d+", tf.__version__)[:2])
  if version < (2, 20):
    raise VaeDistError(
        f"TensorFlow {tf.__version__} is too old: vae_dist needs 2.20 or newer (its Keras 3 "
        "traps are handled for 2.20-2.21). On a TPU VM install the `tpu` extra "
        "(tensorflow-tpu 2.20); see BUILD_NOTES.md, 'TPU VMs: the table'.")


def _has_step_dirs(workdir: str) -> bool:
  """Whether the run has written any checkpoint step, committed or not, from one listing.

  Read before the workdir lock, so it must not open a step's files: on an object store a step
  that another run is committing right now can keep such a read waiting for minutes.
  """
  root = run_files.RunDir(workdir).checkpoints
  try:
    names = tf.io.gfile.listdir(root) if tf.io.gfile.isdir(root) else []
  except tf.errors.OpError:
    return False
  return any(name.rstrip("/").split(".")[0].isdigit() for name in names)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       accept_config_changes: bool = False) -> dict:
  """Trains, evaluates and checkpoints; resumes from the workdir's latest checkpoint.

  Args:
    config: the run's config.
    workdir: where the run lives (local or gs://).
    accept_config_changes: resume even when the config changes what the run trains (see
      config_changes); the changes are recorded in the workdir.

  Returns:
    The final evaluation metrics.

  Raises:
    VaeDistError (ConfigError, DataError, TrainingError, ...) with a message for the user.
    RunPreempted: the run saved and stopped early on a preemption notice; start it again.
  """
  _check_tensorflow_version()
  checks.validate(config)
  # The workdir's own files must be of the right kind, and the workdir must not lie inside
  # another run's files: both are found before the data is prepared.
  run_files.check_training_workdir(workdir)
  run_files.check_kinds(workdir)
  # A resume whose config changes what the run trains is refused here, before the data is
  # prepared and before anything is written (every worker reads the same config.json).
  history = compatibility.check_resume(
      workdir, config, has_checkpoints=_has_step_dirs(workdir), accept=accept_config_changes)
  distribution.configure_host_devices(config)
  strategy = distribution.create_strategy(config)
  distribution.check_batch(config, strategy)
  distribution.check_shared_paths(config, strategy, workdir)
  if not tf.config.list_logical_devices("GPU") and not tf.config.list_logical_devices("TPU"):
    # On the host CPU a step that cannot fit would end in the OOM killer, after the workdir
    # was written; accelerators report their own memory errors.
    memory_estimate.check_fits_host(
        config, config.batch_size // distribution.num_input_pipelines(strategy))
  chief = distribution.is_chief(strategy)
  for line in distribution.describe(config, strategy):
    logging.info(line)
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()

  builder = _load_data(config, strategy, chief)
  input_pipeline.check_splits(builder, config)
  input_pipeline.check_shuffle(builder, config, distribution.num_input_pipelines(strategy))
  lock = _lock_workdir(workdir, strategy, chief)
  try:
    return _train(config, workdir, strategy, chief, builder, history)
  except tf.errors.DataLossError as e:
    # A truncated or corrupt shard of the prepared data: TF's message names no file.
    from vae_dist.data.sources import damage  # pylint: disable=g-import-not-at-top
    raise DataError(damage.describe(builder, e)) from None
  finally:
    if lock is not None:
      lock.release()


def _lock_workdir(workdir, strategy, chief):
  """The chief takes the workdir's lock; in a multi-worker run every worker learns if it failed.

  Without the shared answer the other workers would wait forever at their first collective.
  """
  lock, error = None, None
  if chief:
    lock = workdir_lock.WorkdirLock(workdir)
    try:
      lock.acquire()
    except WorkdirError as e:
      lock, error = None, e
  if distribution.num_input_pipelines(strategy) > 1:
    if distribution.sum_over_workers(strategy, float(error is not None)) > 0 and error is None:
      error = WorkdirError(f"the chief could not take the workdir {workdir}; its log says why.")
  if error is not None:
    raise error
  return lock


def _train(config, workdir, strategy, chief, builder, history) -> dict:
  """The run itself, once the config, devices, data and workdir are known to be usable."""
  run_dir = run_files.RunDir(workdir)
  total_steps = total_train_steps(config, builder)  # >= 1: check_splits saw a full batch.
  state = train_state.create_train_state(config, strategy, total_steps=total_steps)
  per_element = step_elements.steps_per_element(
      config, config.batch_size // strategy.num_replicas_in_sync)
  trainer = steps.Trainer(config=config, strategy=strategy, state=state,
                          steps_per_element=per_element)
  evaluator = train_evaluator.Evaluator(strategy=strategy, model=state.model,
                                        likelihood=trainer.likelihood)
  logging.info("XLA: %s.", trainer.xla)
  checkpoint = state.checkpoint()
  manager = checkpointing.CheckpointManager(
      directory=run_dir.checkpoints,
      max_to_keep=config.max_to_keep,
      keep_every_steps=config.keep_every_steps,
      keep_best=config.keep_best,
      is_chief=chief)
  start_step = _resume(config, workdir, manager, checkpoint, state, chief, history)
  started = run_info.record(workdir, state.model, write=chief)  # Versions, git commit, host.

  num_pipelines = distribution.num_input_pipelines(strategy)
  device_parts = device_data.HostParts() if config.cache == "device" else None
  train_iter = iter(
      strategy.distribute_datasets_from_function(
          input_pipeline.train_dataset_fn(builder, config, start_step, per_element,
                                          device_parts=device_parts)))
  if device_parts is not None:
    trainer.device_part = device_parts.place(strategy)
  eval_steps = eval_input.num_eval_steps(builder, config, strategy.num_replicas_in_sync,
                                             num_pipelines)
  eval_data = strategy.distribute_datasets_from_function(
      eval_input.eval_dataset_fn(builder, config, eval_steps))
  summaries = run_summaries.RunSummaries(
      config=config, workdir=workdir, chief=chief, strategy=strategy, model=state.model,
      builder=builder, num_replicas=strategy.num_replicas_in_sync, total_steps=total_steps)
  # Traced once here; the loop's calls with the same signature reuse this graph.
  first_loop = tf.constant(min(config.steps_per_loop, max(1, total_steps - start_step)), tf.int32)
  summaries.start(start_step,
                  trainer.loop_graph(train_iter, first_loop),
                  run_info=started)

  throughput = run_summaries.Throughput(config.batch_size, start_step, total_steps)
  watch = preemption.PreemptionWatch(address=preemption.metadata_address())
  evaluate = actions.Evaluate(evaluator=evaluator, data=eval_data, num_steps=eval_steps,
                              summaries=summaries, every=config.eval_every_steps)
  periodic = [
      actions.ShowProgress(progress.LoopProgress(start_step, total_steps) if chief else None),
      actions.CheckFinite(trainer),
      actions.ReportTrain(trainer=trainer, summaries=summaries, throughput=throughput,
                          every=config.log_every_steps),
      evaluate,
      actions.AgreeToStop(watch, strategy),
      actions.Save(manager=manager, checkpoint=checkpoint, evaluate=evaluate,
                   every=config.checkpoint_every_steps,
                   metadata={
                       "num_replicas": strategy.num_replicas_in_sync,
                       "tensorflow_version": tf.__version__,
                       "vae_dist_version": vae_dist.__version__,
                       "config_hash": config_hash(config),
                       "run": started,
                   }),
      actions.FlushSummaries(summaries),
  ]
  watch.start()
  logging.info("Training from step %d to %d (%d steps per host loop).", start_step, total_steps,
               config.steps_per_loop)
  current = start_step
  try:
    current = _run_host_loops(
        trainer, train_iter, start_step, total_steps, config.steps_per_loop, periodic,
        profile=lambda step: summaries.profile(step, run_dir.tensorboard_run("train")),
        throughput=throughput)
    if evaluate.step != current:  # A run resumed at its last step: report where it is.
      evaluate.run(current)
  except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError) as e:
    if num_pipelines == 1:
      raise
    # TensorFlow's health check aborted the collectives: another worker is gone.
    latest = manager.latest_step()
    raise TrainingError(
        f"lost contact with {_lost_worker_detail(e)} near step {current}. Committed "
        f"checkpoints are unchanged (latest: step {latest}); start every worker again to "
        "resume.") from None
  finally:
    try:
      manager.wait_until_finished()  # Raises if the last save failed (a full disk, ...).
    finally:
      watch.stop()
      summaries.close(throughput.train_seconds)
  if chief:
    _report(workdir, evaluate.metrics, current, total_steps)
  if current < total_steps:
    raise RunPreempted(current)
  return evaluate.metrics


def _run_host_loops(trainer, train_iter, start_step, total_steps, steps_per_loop, periodic, *,
                    profile, throughput) -> int:
  """Host loops of steps_per_loop train steps until the end or a stop; returns the last step.

  After each host loop every action of `periodic` sees the same Boundary, in list order.
  """
  current = start_step
  while current < total_steps:
    profile(current)
    n = min(steps_per_loop, total_steps - current)
    throughput.start()
    status = trainer.run_loop(train_iter, n)  # The only host sync of a loop.
    current = status.step
    throughput.stop(current, n)
    boundary = actions.Boundary(step=current, status=status, done=current >= total_steps)
    for action in periodic:
      action(boundary)
    if boundary.stop:
      break
  return current


def _resume(config, workdir, manager, checkpoint, state, chief, history) -> int:
  """Restores the run's latest intact step (or config.restore_from) and records the config.

  Returns the step training starts from.
  """
  config_path = run_files.RunDir(workdir).config
  try:
    _restore(config, manager, checkpoint, state.model)
  except CheckpointError as e:
    raise CheckpointError(f"{e}{_changed_fields(config_path, config)}") from None
  start_step = int(state.step.numpy())
  # Written once the checkpoint is known to fit, so that a refused restart leaves the config of
  # the run that wrote the checkpoints in place.
  if chief:
    if history is not None:
      compatibility.record(workdir, history, start_step)
    fileio.write_text_atomic(config_path, config.to_json_best_effort(indent=2, sort_keys=True))
  return start_step


def _changed_fields(config_path, config) -> str:
  """' Config fields changed since the run started: a 1 -> 2.' from its config.json, or ''."""
  try:
    with tf.io.gfile.GFile(config_path) as f:
      before = json.load(f)
  except (tf.errors.OpError, ValueError):
    return ""
  now = json.loads(config.to_json_best_effort(sort_keys=True))

  def flat(d, prefix=""):
    out = {}
    for k, v in d.items():
      out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out

  before, now = flat(before), flat(now)
  changed = [f"{k} {before.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(before) | set(now))
             if before.get(k) != now.get(k)]
  if not changed:
    return ""
  return f" Config fields changed since the run that wrote it: {', '.join(changed)}."


def _lost_worker_detail(error) -> str:
  """Which worker and why, from the collective's error text (gRPC details or the health check)."""
  text = getattr(error, "message", "") or str(error)
  peer = re.search(
      r"(?:remote target|check alive failed,) (/job:[\w-]+/replica:\d+/task:\d+)", text)
  why = re.search(r'grpc_message:"([^"]+)"', text)
  detail = f"worker {peer.group(1)}" if peer else "another worker"
  return detail + (f" ({why.group(1)})" if why else "")


def _load_data(config, strategy, chief):
  """Prepares the data on the chief first, so workers sharing a data_dir never race."""
  if distribution.num_input_pipelines(strategy) == 1:
    return sources.load_builder(config)
  builder = sources.load_builder(config) if chief else None
  distribution.sum_over_workers(strategy, 1.0)  # Barrier: the chief has prepared the data.
  return builder or sources.load_builder(config)


def _restore(config, manager, checkpoint, model):
  """Resumes from the newest committed step that loads; damaged ones are set aside, not deleted.

  A failed read may have overwritten some variables; the next step's read overwrites them all.
  """
  steps_found = manager.all_steps()
  for latest in reversed(steps_found):
    try:
      manager.restore(latest, checkpoint)
    except DamagedCheckpointError as e:
      manager.set_aside(latest, str(e))
      continue
    logging.info("Resumed from %s.", manager.step_dir(latest))
    return
  if steps_found:
    # Stopping beats training on: failed reads may have filled some variables already.
    raise WorkdirError(
        f"none of the checkpoints in {manager.directory} loads (steps "
        f"{', '.join(map(str, steps_found))}); each was set aside as <step>.damaged. Start the "
        "same command again to train from step 0, or restore a copy of the checkpoints.")
  if config.restore_from:
    target = checkpoint
    if config.restore_weights_only:
      target = tf.train.Checkpoint(model=model)
    path = manager.restore_path(config.restore_from, target,
                                expect_partial=config.restore_weights_only)
    logging.info("Started from %s%s.", path, " (weights only)" if config.restore_weights_only
                 else "")


def _report(workdir, metrics, step, total_steps):
  run_dir = run_files.RunDir(workdir)
  status = "finished" if step >= total_steps else f"stopped at step {step} of {total_steps}"
  lines = [f"Run {status}. Results in {workdir}"]
  if metrics:
    lines.append(f"  final test ELBO: {metrics['eval/elbo']:.2f} nats per image "
                 f"({metrics['eval/bits_per_dim']:.4f} bits/dim) at step {step}")
  lines.append(f"  metrics:     {run_dir.metrics}")
  lines.append(f"  checkpoints: {run_dir.checkpoints}")
  lines.append(f"  tensorboard --logdir {run_dir.tensorboard}")
  print("\n".join(lines), flush=True)
  fileio.write_text_atomic(
      run_dir.final_metrics,
      json.dumps({"step": step, **metrics}, indent=2, sort_keys=True))

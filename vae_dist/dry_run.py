"""--dry_run: everything training checks before its first step, printed, with nothing trained.

The same checks as loop.train_and_evaluate runs before it takes the workdir (the config, the
workdir's files, a resume's config changes, the devices and strategy, the batch, host memory, the
data set and its splits), in the same order, so a dry run that passes means the real run gets
past its start-up. Nothing is written into the workdir; a data set that is not prepared yet is
prepared into config.data_dir, as training would (that is the check that the data is there).
"""


import ml_collections


def check(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Prints the resolved config, the strategy and devices, the data set and the batch.

  Raises:
    VaeDistError: the first problem the real run would stop at, as its one-line message.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from vae_dist.config import compatibility  # pylint: disable=g-import-not-at-top
  from vae_dist.config import checks  # pylint: disable=g-import-not-at-top
  from vae_dist.data import sources  # pylint: disable=g-import-not-at-top
  from vae_dist.train import distribution  # pylint: disable=g-import-not-at-top
  from vae_dist.data import input_pipeline  # pylint: disable=g-import-not-at-top
  from vae_dist.data import step_elements  # pylint: disable=g-import-not-at-top
  from vae_dist.config import memory_estimate  # pylint: disable=g-import-not-at-top
  from vae_dist import run_files  # pylint: disable=g-import-not-at-top
  from vae_dist.train import loop  # pylint: disable=g-import-not-at-top

  checks.validate(config)
  print(config, end="")
  run_files.check_training_workdir(workdir)
  run_files.check_kinds(workdir)
  resumes = bool(compatibility.read_recorded(workdir))
  compatibility.check_resume(workdir, config, has_checkpoints=resumes, accept=False)
  distribution.configure_host_devices(config)
  strategy = distribution.create_strategy(config)
  distribution.check_batch(config, strategy)
  if not tf.config.list_logical_devices("GPU") and not tf.config.list_logical_devices("TPU"):
    memory_estimate.check_fits_host(
        config, config.batch_size // distribution.num_input_pipelines(strategy))
  lines = distribution.describe(config, strategy)
  builder = sources.load_builder(config)
  input_pipeline.check_splits(builder, config)
  input_pipeline.check_shuffle(builder, config, distribution.num_input_pipelines(strategy))
  splits = builder.info.splits
  lines.append(f"Data: {builder.info.name} in {builder.data_dir}: "
               f"{splits[config.train_split].num_examples} train examples "
               f"({config.train_split}), eval split {config.eval_split}.")
  per_element = step_elements.steps_per_element(
      config, config.batch_size // strategy.num_replicas_in_sync)
  lines.append(f"Training: {loop.total_train_steps(config, builder)} steps, "
               f"{config.steps_per_loop} per host loop, {per_element} per input element; "
               f"workdir {workdir} "
               f"({'resumes' if resumes else 'new run'}; nothing written).")
  if config.cache == "device":
    pipelines = distribution.num_input_pipelines(strategy)
    part = input_pipeline.part_bytes(config,
                                     splits[config.train_split].num_examples // pipelines)
    lines.append(f"Train images: a copy of each host's part (about {part / 2**20:,.1f} MB) in "
                 f"the memory of each of the {strategy.num_replicas_in_sync} replicas' devices "
                 "(cache='device'); the input carries row numbers.")
  print("\n".join(["Dry run: the run would start."] + lines), flush=True)


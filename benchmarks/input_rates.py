"""Input pipeline images/s per host core at each model size, and what the train step consumes.

Part of `python benchmarks/speed.py --input_sizes=...` (see there). For each image size:

  per cores count (each in its own process, pinned to that many cores with its CPU affinity,
  which TensorFlow's and tf.data's thread pools follow):
    raw     cache='none': every image decoded and resized as read (what every epoch costs
            without a cache);
    build   building the model-size cache on disk (decode + resize + write, once per data set);
    disk    cache='disk': reading that cache;
    memory  cache='memory': from the memory cache, after a first pass filled it;
    memory_full  cache='memory' with shuffle='full': epochs as permutations of the part held in
            memory, gathered a batch at a time (no per-example stage);
  and, on every core of the host, the config's train step at that size (its images/s and FLOPs
  per image), fed from a constant batch so that only the step is timed.

Each rate is the steady state of vae_dist's real train pipeline (shuffle, batch, scaling and
binarisation included), pulled inside a tf.function, over whole epochs. `images_per_sec_per_core`
counts images per CPU-second the process used (all its threads), which other processes on a
shared machine do not inflate; `images_per_sec` is the wall-clock rate. The cache is written to a temporary folder
of its own, so `build` is always measured and the user's caches are left alone.
"""
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import ml_collections

KINDS = ("raw", "build", "disk", "memory", "memory_full")


def _affinity():
  try:
    return sorted(os.sched_getaffinity(0))
  except AttributeError:  # Not on Linux: no pinning; cores counts are then nominal.
    return list(range(os.cpu_count() or 1))


def _run_worker(spec: dict, cores) -> dict:
  """Runs `python benchmarks/input_rates.py <spec>` pinned to `cores`; returns its JSON."""
  with tempfile.TemporaryDirectory() as tmp:
    spec_path, out_path = os.path.join(tmp, "spec.json"), os.path.join(tmp, "out.json")
    with open(spec_path, "w") as f:
      json.dump({**spec, "output": out_path}, f)
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    pin = None
    if cores is not None and hasattr(os, "sched_setaffinity"):
      pin = lambda: os.sched_setaffinity(0, cores)  # pylint: disable=unnecessary-lambda-assignment
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), spec_path], env=env,
                          stdout=sys.stderr, preexec_fn=pin, check=False)
    if proc.returncode != 0:
      raise RuntimeError(f"input rate worker {spec.get('what')} failed (exit {proc.returncode})")
    with open(out_path) as f:
      return json.load(f)


def measure(config: ml_collections.ConfigDict, sizes, cores_counts, *, seconds: float,
            step_batch: int, short: bool) -> dict:
  """The per-core table: {size: {'pipeline': {cores: {kind: ...}}, 'train_step': ...}}.

  Args:
    config: the run config (its data set must be prepared).
    sizes: model image sizes to measure.
    cores_counts: how many cores each pipeline measurement may use (e.g. [1, 2]).
    seconds: how long each rate is timed.
    step_batch: the batch of the train step measurement (0: skip it).
    short: a few batches each (checks the fields, in seconds).
  """
  available = _affinity()
  out = {"cores_available": len(available), "seconds_per_rate": seconds, "sizes": {}}
  with tempfile.TemporaryDirectory(prefix="vae_dist_input_rates_") as cache_dir:
    for size in sizes:
      entry = {"pipeline": {}}
      for n in cores_counts:
        if n > len(available):
          continue
        spec = {"what": "pipeline", "config": config.to_json(), "size": size,
                "cache_dir": cache_dir, "seconds": seconds, "short": short}
        entry["pipeline"][str(n)] = _run_worker(spec, available[:n])
      if step_batch:
        spec = {"what": "train_step", "config": config.to_json(), "size": size,
                "batch": step_batch, "seconds": seconds, "short": short}
        entry["train_step"] = _run_worker(spec, None)
      out["sizes"][str(size)] = entry
  return out


# ---- the worker ---------------------------------------------------------------------------------


def _sized_config(config_json: str, size: int, cache: str, cache_dir: str = ""):
  from vae_dist.config import defaults  # pylint: disable=g-import-not-at-top
  config = defaults.base_config()
  config.unlock()
  config.update(ml_collections.ConfigDict(json.loads(config_json)))
  config.image_size, config.cache, config.cache_dir = size, cache, cache_dir
  return config


def _pipeline_worker(spec) -> dict:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from vae_dist.data import sources  # pylint: disable=g-import-not-at-top
  from vae_dist.data import input_pipeline  # pylint: disable=g-import-not-at-top
  from vae_dist.data import model_size_cache  # pylint: disable=g-import-not-at-top

  cores = len(_affinity())

  @tf.function
  def drain(iterator, n):
    for _ in tf.range(n):
      next(iterator)

  def rate(config, warm_batches):
    """images/s of the train pipeline after `warm_batches` batches, over whole epochs.

    Whole epochs, because the shuffle buffer makes the rate uneven inside one: an epoch first
    fills the buffer (decoding without giving out) and ends emptying it (giving out only).
    """
    it = iter(input_pipeline.train_dataset_fn(builder, config, 0)(tf.distribute.InputContext()))
    drain(it, tf.constant(max(1, warm_batches)))
    epochs = 1
    while True:
      n = 2 if spec["short"] else math.ceil(epochs * count / config.batch_size)
      t0, c0 = time.perf_counter(), time.process_time()
      drain(it, tf.constant(n))
      dt, cpu = time.perf_counter() - t0, time.process_time() - c0
      if dt >= spec["seconds"] or spec["short"]:
        return n * config.batch_size / dt, n * config.batch_size / max(cpu, 1e-9)
      epochs = max(epochs + 1, math.ceil(epochs * 1.2 * spec["seconds"] / max(dt, 1e-6)))

  base = _sized_config(spec["config"], spec["size"], "none")
  builder = sources.load_builder(base)
  count = builder.info.splits[base.train_split].num_examples
  batch = min(base.batch_size, count)
  out = {"cores": cores, "train_examples": count, "batch_size": batch}
  kinds = {}
  c = _sized_config(spec["config"], spec["size"], "none")
  c.batch_size = batch
  kinds["raw"] = rate(c, 2)
  c = _sized_config(spec["config"], spec["size"], "disk", spec["cache_dir"])
  c.batch_size = batch
  folder = input_pipeline.disk_cache_folder(builder, c)
  files = list(builder.info.splits[c.train_split].filenames)
  if model_size_cache.missing_files(folder, builder, c.train_split, files):
    t0, c0 = time.perf_counter(), time.process_time()
    written = model_size_cache.build(
        folder, builder, c.train_split, files,
        lambda image: input_pipeline.to_model_size(image, c), num_threads=cores)
    kinds["build"] = (written / (time.perf_counter() - t0),
                      written / max(time.process_time() - c0, 1e-9))
  kinds["disk"] = rate(c, 2)
  c = _sized_config(spec["config"], spec["size"], "memory")
  c.batch_size = batch
  kinds["memory"] = rate(c, math.ceil(count / batch) + 1)  # The first pass fills the cache.
  c = _sized_config(spec["config"], spec["size"], "memory")
  c.batch_size, c.shuffle = batch, "full"
  kinds["memory_full"] = rate(c, 2)  # The first batch waits for the whole part.
  out["images_per_sec"] = {k: wall for k, (wall, _) in kinds.items()}
  # Per core: images per CPU-second the process used (all its threads). On a shared machine
  # the wall-clock rate also counts other processes' time on the same cores; CPU time does not.
  out["images_per_sec_per_core"] = {k: cpu for k, (_, cpu) in kinds.items()}
  out["wall_images_per_sec_per_pinned_core"] = {k: wall / cores for k, (wall, _) in kinds.items()}
  out["load_average"] = list(os.getloadavg())
  return out


def _train_step_worker(spec) -> dict:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import flops  # pylint: disable=g-import-not-at-top  # benchmarks/ is sys.path[0].
  from vae_dist.train import distribution  # pylint: disable=g-import-not-at-top
  from vae_dist.train import state as train_state  # pylint: disable=g-import-not-at-top
  from vae_dist.train import steps  # pylint: disable=g-import-not-at-top

  config = _sized_config(spec["config"], spec["size"], "none")
  config.batch_size = spec["batch"]
  config.steps_per_loop = 1 if spec["short"] else 2
  strategy = distribution.create_strategy(config)
  x = tf.random.stateless_uniform([config.batch_size, config.image_size, config.image_size,
                                   config.channels], seed=[1, 2])
  dist = strategy.distribute_datasets_from_function(
      lambda ctx: tf.data.Dataset.from_tensors({"image": x}).repeat())
  iterator = iter(dist)
  state = train_state.create_train_state(config, strategy, total_steps=10**6)
  trainer = steps.Trainer(config=config, strategy=strategy, state=state)
  n = tf.constant(config.steps_per_loop, tf.int32)
  t0 = time.perf_counter()
  trainer.train_loop(iterator, n)
  int(trainer.step.numpy())
  compile_seconds = time.perf_counter() - t0
  calls, elapsed = 0, 0.0
  t0, c0 = time.perf_counter(), time.process_time()
  while elapsed < spec["seconds"] or calls < 2:
    trainer.train_loop(iterator, n)
    int(trainer.step.numpy())
    calls += 1
    elapsed = time.perf_counter() - t0
    if spec["short"] and calls >= 2:
      break
  images = calls * config.steps_per_loop * config.batch_size
  counted = flops.analytic_flops(state.model, config)
  return {"cores": len(_affinity()), "batch_size": config.batch_size,
          "jit_compile": config.jit_compile, "compile_seconds": compile_seconds,
          "images_per_sec": images / elapsed,
          "images_per_cpu_second": images / max(time.process_time() - c0, 1e-9),
          "train_flops_per_image": counted["train"],
          "load_average": list(os.getloadavg())}


def main(argv):
  with open(argv[1]) as f:
    spec = json.load(f)
  worker = {"pipeline": _pipeline_worker, "train_step": _train_step_worker}[spec["what"]]
  result = worker(spec)
  with open(spec["output"], "w") as f:
    json.dump(result, f)


if __name__ == "__main__":
  main(sys.argv)

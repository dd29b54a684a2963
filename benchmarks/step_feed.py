"""Train steps per second one host's input can feed, against config.steps_per_element.

On an accelerator host the step is short and what bounds the step rate on the host's side is
per step or per element, not per image: tf.data's stages that run once per element, the
distributed iterator dealing elements to the replicas, and the host loop dispatching the step.
This measures that ceiling with vae_dist's own pieces: the real train pipeline
(input_pipeline.train_dataset_fn, cache='memory', shuffle='full' unless told otherwise), dealt by
MirroredStrategy to R logical CPU devices (the path of a multi-GPU host, without its PCIe copy),
and drained by the train loop's own structure (steps.run_steps) running an empty step, which only
touches its batch. Two figures per setting:

  input   elements read in a tf.function loop, nothing dispatched per step: the pipeline and the
          distributed iterator alone;
  loop    steps.run_steps with the empty step: what the train loop adds on top, per step.

With --cache=device the pipeline gives row numbers (config.cache='device', data/device_data.py)
and a third figure is measured:

  loop_gather  the step gathers its batch from its replica's copy of the images, here on the
               host's cores (on an accelerator that is the device's work, from its memory).

Each setting (size, cores, R, B, k) runs in its own process pinned to that many cores (CPU
affinity).

  python benchmarks/step_feed.py --config=configs/fashion_mnist.py --sizes=28 \
      --data_dir=/tmp/shuffle_bench/tfds --manual_dir=/tmp/shuffle_bench/idx \
      --replicas_x_batch=4x32,8x16 --cores=1,2 --output=/tmp/step_feed_28.json
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _affinity():
  try:
    return sorted(os.sched_getaffinity(0))
  except AttributeError:
    return list(range(os.cpu_count() or 1))


def _worker(spec: dict) -> dict:
  """One process: R logical devices, one per-replica batch B and one k, at one size."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, ROOT)
  from vae_dist import cli  # pylint: disable=g-import-not-at-top
  from vae_dist.data import device_data  # pylint: disable=g-import-not-at-top
  from vae_dist.data import input_pipeline  # pylint: disable=g-import-not-at-top
  from vae_dist.data import sources  # pylint: disable=g-import-not-at-top
  from vae_dist.data import step_elements  # pylint: disable=g-import-not-at-top
  from vae_dist.train import distribution  # pylint: disable=g-import-not-at-top
  from vae_dist.train import steps  # pylint: disable=g-import-not-at-top
  import importlib.util  # pylint: disable=g-import-not-at-top

  replicas = spec["replicas"]
  path, _, arg = cli.resolve_config(spec["config"]).partition(":")
  module_spec = importlib.util.spec_from_file_location("bench_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(arg) if arg else module.get_config()
  config.image_size, config.cache, config.shuffle = spec["size"], spec["cache"], spec["shuffle"]
  config.data_dir, config.manual_dir = spec["data_dir"], spec["manual_dir"]
  config.cache_max_bytes = 64 * 2**30
  config.num_cpu_devices, config.strategy = replicas, "mirrored"
  config.steps_per_loop = spec["steps_per_loop"]
  if spec.get("train_split"):
    config.train_split = spec["train_split"]
  distribution.configure_host_devices(config)
  strategy = distribution.create_strategy(config)
  builder = sources.load_builder(config)

  def empty_step(batch, part=None):  # Touches the batch, so the element is really delivered.
    del part
    if "image" in batch:
      tf.reduce_sum(tf.cast(batch["image"][:, 0, 0, 0], tf.int32))
    else:  # cache='device': the rows the step would gather.
      tf.reduce_sum(batch["rows"])

  def gathering_step(element, part):  # cache='device': the step's own gather, on this CPU.
    images = device_data.batch_images(part, element, config, config.batch_size)
    tf.reduce_sum(tf.cast(images[:, 0, 0, 0], tf.int32))

  # One setting per process, and no iterator is ever destroyed: destroying a distributed
  # iterator over eight logical devices waited minutes here (TF 2.21: tf.data's autotuning
  # threads of the per-device datasets), which would stall the measurements that follow.
  batch, k_setting = spec["batch"], spec["k"]
  config.batch_size = batch * replicas
  config.steps_per_element = 0 if k_setting == "auto" else int(k_setting)
  k = step_elements.steps_per_element(config, batch)
  # fetch_to_device=False: the elements stay on the host and each step's ops read them there
  # (what TensorFlow does without a per-device buffer); the default True is what runs use.
  options = tf.distribute.InputOptions(experimental_fetch_to_device=spec["fetch_to_device"])
  parts = device_data.HostParts() if config.cache == "device" else None
  it = iter(strategy.distribute_datasets_from_function(
      input_pipeline.train_dataset_fn(builder, config, 0, k, device_parts=parts),
      options=options))
  part = parts.place(strategy) if parts else None

  @tf.function
  def read(n):
    for _ in tf.range(0, n, k):
      next(it)

  @tf.function
  def loop(n):
    steps.run_steps(strategy, it, n, k, empty_step, part)

  @tf.function
  def loop_gather(n):
    steps.run_steps(strategy, it, n, k, gathering_step, part)

  row = {"per_replica_batch": batch, "steps_per_element": k, "k_setting": k_setting}
  kinds = [("input", read), ("loop", loop)]
  if part is not None:
    kinds.append(("loop_gather", loop_gather))
  for name, fn in kinds:
    n = config.steps_per_loop
    fn(tf.constant(n))  # Traces, and waits for the held part.
    while True:
      t0, c0 = time.perf_counter(), time.process_time()
      fn(tf.constant(n))
      dt, cpu = time.perf_counter() - t0, time.process_time() - c0
      if dt >= spec["seconds"]:
        break
      n = int(n * min(10, 1.3 * spec["seconds"] / max(dt, 1e-6)))
      n -= n % config.steps_per_loop
    row[name] = {"steps_per_sec": n / dt, "steps_per_cpu_sec": n / max(cpu, 1e-9),
                 "images_per_sec": n * batch * replicas / dt}
  print(json.dumps({"size": spec["size"], "cores": len(_affinity()), "replicas": replicas,
                    **row}), file=sys.stderr, flush=True)
  return {"size": spec["size"], "replicas": replicas, "cores": len(_affinity()),
          "train_examples": builder.info.splits[config.train_split].num_examples,
          "load_average": list(os.getloadavg()), "rows": [row]}


def _run_worker(spec: dict, cores) -> dict:
  with tempfile.TemporaryDirectory() as tmp:
    spec_path, out_path = os.path.join(tmp, "spec.json"), os.path.join(tmp, "out.json")
    with open(spec_path, "w") as f:
      json.dump({**spec, "output": out_path}, f)
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    pin = lambda: os.sched_setaffinity(0, cores)  # pylint: disable=unnecessary-lambda-assignment
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", spec_path],
                          env=env, preexec_fn=pin, check=False)
    if proc.returncode != 0:
      raise RuntimeError(f"worker for {spec} failed (exit {proc.returncode})")
    with open(out_path) as f:
      return json.load(f)


def main():
  if len(sys.argv) == 3 and sys.argv[1] == "--worker":
    with open(sys.argv[2]) as f:
      spec = json.load(f)
    with open(spec["output"], "w") as f:
      json.dump(_worker(spec), f)
    # The measurement is written. Tearing down eight replicas' distributed iterators took
    # minutes here (tf.data's autotuning threads of the per-device datasets); skip it.
    os._exit(0)  # pylint: disable=protected-access
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", required=True)
  p.add_argument("--sizes", default="28")
  p.add_argument("--data_dir", required=True)
  p.add_argument("--manual_dir", default="")
  p.add_argument("--replicas_x_batch", default="4x32,8x16",
                 help="R x per-replica batch; the recipes' global batch 128 on a v4-8 (4 chips) "
                      "and on the 8-chip hosts.")
  p.add_argument("--ks", default="1,auto", help="steps_per_element values ('auto' = 0).")
  p.add_argument("--cores", default="1,2")
  p.add_argument("--shuffle", default="full")
  p.add_argument("--cache", default="memory", choices=("memory", "device"),
                 help="device: row numbers as input, and a third figure, loop_gather, in which "
                      "the step gathers its batch from its copy (on this CPU)")
  p.add_argument("--steps_per_loop", type=int, default=50, help="the recipes' host loop")
  p.add_argument("--train_split", default="",
                 help="e.g. 'train[:10000]': with --cache=device the rate depends on the part's "
                      "size (the permutation's), not on its images")
  p.add_argument("--seconds", type=float, default=3.0)
  p.add_argument("--fetch_to_device", default="true", choices=("true", "false"),
                 help="tf.distribute.InputOptions(experimental_fetch_to_device=...)")
  p.add_argument("--output", default="")
  a = p.parse_args()
  available = _affinity()
  pairs = [tuple(int(v) for v in item.split("x")) for item in a.replicas_x_batch.split(",")]
  runs = []
  for size in (int(s) for s in a.sizes.split(",")):
    for n in (int(c) for c in a.cores.split(",")):
      for replicas, batch in pairs:
        for k in a.ks.split(","):
          spec = {"config": a.config, "size": size, "data_dir": a.data_dir,
                  "manual_dir": a.manual_dir, "replicas": replicas, "batch": batch, "k": k,
                  "shuffle": a.shuffle, "cache": a.cache, "seconds": a.seconds, "steps_per_loop": a.steps_per_loop,
                  "fetch_to_device": a.fetch_to_device == "true", "train_split": a.train_split}
          runs.append(_run_worker(spec, available[:n]))
  out = {"config": a.config, "train_split": a.train_split, "shuffle": a.shuffle,
         "cache": a.cache, "steps_per_loop": a.steps_per_loop,
         "fetch_to_device": a.fetch_to_device, "runs": runs}
  text = json.dumps(out, indent=1)
  if a.output:
    with open(a.output, "w") as f:
      f.write(text)
  print(text)


if __name__ == "__main__":
  main()

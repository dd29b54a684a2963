"""Speed benchmark: vae_dist's train loop against the TensorFlow CVAE tutorial's plain loop.

  python benchmarks/speed.py --config=configs/mnist.py --config.dataset=fashion_mnist
  python benchmarks/speed.py --config=configs/mnist.py --config.dataset=fashion_mnist \
      --batch_sizes=32 --jit_compile=true --steps_per_loop=125 --replicas=1 \
      --mixed_precision=none --rounds=9 --output=benchmarks/b32.json
  python benchmarks/speed.py --config=configs/mnist.py --short   # seconds: every field, once

Prints one JSON object (also written to --output) with, for the config's model:

  host            devices, CPU count, load average before and after, TensorFlow version
  matmul          the host's float32 matrix-product GFLOP/s (a large tf.matmul, timed)
  flops           per batch size: training FLOPs per image, counted (see flops.count_flops)
  input_pipeline  per batch size: images/sec of vae_dist's tf.data pipeline alone
  variants        one entry per (batch, jit_compile, steps_per_loop, replicas, precision):
                  vae_dist's Trainer and the plain loop timed in alternating rounds
                  (A, B, A, B, ...), with medians, spreads and the per-round speedup
  summary         per batch size: the config's own setting (its jit_compile and
                  steps_per_loop, float32, one replica) against the plain loop, and the
                  fastest variant
  input_per_core  with --input_sizes: per image size, the train pipeline's images/s per host
                  core from the prepared data, building and reading the model-size disk cache,
                  and the memory cache (each pinned to --input_cores cores), and the train step
                  at that size (benchmarks/input_rates.py). --input_only skips the variants.

"The plain loop" is the tutorial's: one `tf.function` call per batch (`train_step(model, x,
optimizer)` with a GradientTape and `optimizer.apply_gradients`), no XLA, no host loop, fed by a
Python `for` over the batches. It trains the same model (networks.VAE of the same config, same
precision policy) on the same objective (objective.elbo_terms) and the same input pipeline, so
the ratio measures how the step is run, nothing else.

Every replica count runs in its own subprocess: logical CPU devices must be configured before
TensorFlow initialises, and a fresh process per count keeps the measurements independent. On GPU
or TPU hosts the same command measures the accelerators: --replicas=1 runs the config's strategy
over every local accelerator, the matmul peak is taken on the first accelerator, and the plain
loop runs on the default device (under TPUStrategy: one strategy.run per call). Only the
logical-device variant (--replicas above 1) is CPU-specific.
"""
import contextlib
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags
import tensorflow as tf

import vae_dist
from vae_dist.config import checks
from vae_dist.data import input_pipeline
from vae_dist.data import sources
from vae_dist.config import defaults
from vae_dist import errors
from vae_dist.train import distribution
from vae_dist.train import state as train_state
from vae_dist.train import steps

# benchmarks/flops.py and input_rates.py (benchmarks/ is sys.path[0] when run as a script).
import flops
import input_rates

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/mnist.py.", lock_config=True)
_BATCH_SIZES = flags.DEFINE_list(
    "batch_sizes", [], "Global batch sizes. Default: config.batch_size / 4, x1 and x4 "
    "(8, 32, 128 for configs/mnist.py); --short: the smallest of them.")
_JIT = flags.DEFINE_list("jit_compile", ["true", "false"], "jit_compile values to time.")
_STEPS_PER_LOOP = flags.DEFINE_list(
    "steps_per_loop", [], "Train steps per host-loop call. Default: 1 and config.steps_per_loop "
    "(--short: 1 and 2).")
_REPLICAS = flags.DEFINE_list(
    "replicas", ["1", "2"], "Replica counts, each run in its own process. 1: the config's "
    "strategy (on a GPU or TPU host: every local accelerator). N > 1: N logical CPU devices "
    "under MirroredStrategy (on a GPU host: every GPU); pass --replicas=1 on a TPU host.")
_PRECISIONS = flags.DEFINE_list("mixed_precision", ["none", "bfloat16"],
                                "Precision policies: none | bfloat16 | float16.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Timing rounds per variant (each times A then B).")
_ROUND_SECONDS = flags.DEFINE_float("round_seconds", 1.0, "Target duration of one A or B round.")
_MATMUL_SIZE = flags.DEFINE_integer("matmul_size", 2048, "n of the n x n x n matmul peak test.")
_WARM_EXAMPLES = flags.DEFINE_integer(
    "warm_examples", 200_000, "Fill the input pipeline's cache (one pass over the train split) "
    "before timing when the split has at most this many examples; larger splits are timed "
    "while reading.")
_SHORT = flags.DEFINE_bool("short", False, "A few steps of every variant: checks the fields.")
_INPUT_SIZES = flags.DEFINE_list(
    "input_sizes", [], "Image sizes at which to measure the input pipeline's images/s per core "
    "(from the prepared data, the model-size cache on disk and the memory cache) and the train "
    "step's images/s: the `input_per_core` field (see benchmarks/input_rates.py).")
_INPUT_CORES = flags.DEFINE_list("input_cores", ["1", "2"],
                                 "Cores each --input_sizes pipeline measurement is pinned to.")
_INPUT_SECONDS = flags.DEFINE_float("input_seconds", 3.0, "How long each input rate is timed.")
_INPUT_STEP_BATCH = flags.DEFINE_integer(
    "input_step_batch", 32, "Batch of the train step timed at each --input_sizes (0: none).")
_INPUT_ONLY = flags.DEFINE_bool("input_only", False, "Only the host fields and input_per_core: "
                                "no trainer-versus-plain-loop variants.")
_OUTPUT = flags.DEFINE_string("output", "", "Also write the JSON here.")
# Internal: set by the parent process for each replica count.
_WORKER_REPLICAS = flags.DEFINE_integer("worker_replicas", 0, "Internal: run one replica count.")
_WORKER_OUTPUT = flags.DEFINE_string("worker_output", "", "Internal: the worker's JSON file.")
_WORKER_HOST_FIELDS = flags.DEFINE_bool("worker_host_fields", False,
                                        "Internal: this worker also measures the host fields.")


@dataclasses.dataclass(frozen=True)
class Variant:
  batch_size: int
  jit_compile: bool
  steps_per_loop: int
  replicas: int
  mixed_precision: str


def _ints(values):
  return [int(v) for v in values]


def _bools(values):
  table = {"true": True, "1": True, "on": True, "false": False, "0": False, "off": False}
  return [table[v.strip().lower()] for v in values]


def variant_grid(config, short: bool) -> list:
  """The variants to time, in run order.

  The first precision and the first replica count are the base: there every batch size, jit
  setting and steps_per_loop is timed. Every other precision and replica count is timed at each
  batch size and jit setting with the largest steps_per_loop (one factor changed at a time).
  """
  batches = _ints(_BATCH_SIZES.value)
  if not batches:
    batches = sorted({max(1, config.batch_size // 4), config.batch_size, config.batch_size * 4})
    if short:
      batches = batches[:1]
  config_spl = config.steps_per_loop or defaults.auto_steps_per_loop(config)  # 0: auto.
  spls = _ints(_STEPS_PER_LOOP.value) or ([1, 2] if short else [1, config_spl])
  jits = _bools(_JIT.value)
  replicas = _ints(_REPLICAS.value)
  precisions = list(_PRECISIONS.value)
  out = []
  for r in replicas:
    for p in precisions:
      base = r == replicas[0] and p == precisions[0]
      if not base and r != replicas[0] and p != precisions[0]:
        continue
      for b in batches:
        if b % r:
          continue
        for j in jits:
          for s in (spls if base else [max(spls)]):
            out.append(Variant(b, j, s, r, p))
  return out


# ---- input pipeline, trainer and plain loop -----------------------------------------------------


@tf.function
def _drain(iterator, num_batches):
  """Pulls num_batches batches inside one graph: the pipeline's rate without Python per batch."""
  for _ in tf.range(num_batches):
    next(iterator)


def _epoch_batches(builder, config, global_batch):
  count = builder.info.splits[config.train_split].num_examples
  return -(-count // global_batch) + 1, count


def _time_drain(iterator, batch_size, seconds, max_batches=None):
  """images/sec of pulling batches for about `seconds` (at most max_batches)."""
  n = 10 if max_batches is None else min(10, max_batches)
  while True:
    t0 = time.perf_counter()
    _drain(iterator, tf.constant(n))
    dt = time.perf_counter() - t0
    if dt >= seconds or n >= (max_batches or 10**6):
      return n * batch_size / dt, n
    n = int(n * min(100.0, max(2.0, 1.2 * seconds / max(dt, 1e-6))))
    if max_batches is not None:
      n = min(n, max_batches)


def pipeline_rate(builder, config, batch_size, warm_examples, seconds) -> dict:
  """images/sec of the train pipeline alone: while reading (decoding, filling the cache) and after.

  The batches are pulled inside a tf.function, so this is what the pipeline can deliver to a
  train loop, not Python's iteration speed. `images_per_sec` is the steady state: from the cache
  when the split was small enough to fill it first (cache_warmed), else while reading.
  """
  c = config.copy_and_resolve_references()
  c.batch_size = batch_size
  it = iter(input_pipeline.train_dataset_fn(builder, c, 0)(tf.distribute.InputContext()))
  _drain(it, tf.constant(1))  # Traces the drain function and starts the pipeline's threads.
  batches, count = _epoch_batches(builder, c, batch_size)
  warm = count <= warm_examples
  out = {"train_examples": count, "cache_warmed": warm}
  if warm:
    t0 = time.perf_counter()
    _drain(it, tf.constant(batches))  # The whole first pass: the cache is full after it.
    out["first_pass_images_per_sec"] = batches * batch_size / (time.perf_counter() - t0)
    out["images_per_sec"], out["batches_timed"] = _time_drain(it, batch_size, seconds)
  else:
    rate, n = _time_drain(it, batch_size, seconds, max_batches=batches - 2)
    out["first_pass_images_per_sec"] = out["images_per_sec"] = rate
    out["batches_timed"] = n
  return out


def _variant_config(base, v: Variant, strategy_name: str):
  c = base.copy_and_resolve_references()
  c.batch_size = v.batch_size
  c.eval_batch_size = -1
  c.jit_compile = "true" if v.jit_compile else "false"
  c.steps_per_loop = v.steps_per_loop
  c.mixed_precision = v.mixed_precision
  c.strategy = strategy_name
  c.num_cpu_devices = v.replicas if v.replicas > 1 else 0
  return c


def _float_feed(config):
  c = config.copy_and_resolve_references()
  c.feed_dtype = "float32"
  return c


class _Trainer:
  """vae_dist's way: steps.Trainer's host loop (steps_per_loop steps per tf.function call)."""

  def __init__(self, config, strategy, iterator):
    self.spl = config.steps_per_loop
    self.iterator = iterator
    state = train_state.create_train_state(config, strategy, total_steps=10**6)
    self.trainer = steps.Trainer(config=config, strategy=strategy, state=state)
    self.xla = self.trainer.xla

  def run(self, num_steps) -> float:
    t0 = time.perf_counter()
    n = tf.constant(self.spl, tf.int32)
    for _ in range(num_steps // self.spl):
      self.trainer.train_loop(self.iterator, n)
    int(self.trainer.step.numpy())  # Waits for the device.
    return time.perf_counter() - t0


class _Plain:
  """The tutorial's way: one tf.function call per batch, no XLA, no host loop."""

  def __init__(self, config, strategy, iterator):
    self.iterator = iterator
    self.strategy = strategy
    # Keras' own optimizer, which sums the replicas' gradients in apply, as in the tutorial.
    state = train_state.create_train_state(config, strategy, total_steps=10**6,
                                           sums_over_replicas=True)
    self.model, self.optimizer = state.model, state.optimizer
    step_fn = flops.plain_step_fn(config)
    if isinstance(strategy, tf.distribute.TPUStrategy):
      # A TPU runs only compiled programs: the per-batch call goes through strategy.run there.
      self.train_step = tf.function(lambda model, x, optimizer: strategy.run(
          lambda x: step_fn(model, x, optimizer), args=(x,)))
    else:
      self.train_step = tf.function(step_fn)

  def run(self, num_steps) -> float:
    t0 = time.perf_counter()
    for _ in range(num_steps):
      self.train_step(self.model, next(self.iterator)["image"], self.optimizer)
    int(self.optimizer.iterations.numpy())
    return time.perf_counter() - t0


def _timing(images, seconds, steps_done) -> dict:
  rates = [images / s for s in seconds]
  return {
      "images_per_sec": statistics.median(rates),
      "step_time_ms": statistics.median(seconds) / steps_done * 1e3,
      "images_per_sec_min": min(rates),
      "images_per_sec_max": max(rates),
      "rounds_images_per_sec": rates,
  }


def time_variant(v, trainer, plain, rounds, round_seconds, short, counted) -> dict:
  """Alternating rounds A (trainer), B (plain): machine noise hits both sides alike."""
  t0 = time.perf_counter()
  trainer.run(v.steps_per_loop)  # Trace and compile.
  compile_seconds = time.perf_counter() - t0
  plain.run(2)
  unit = trainer.run(v.steps_per_loop)  # One call, compiled: sizes the rounds.
  if short:
    steps_per_round = v.steps_per_loop
  else:
    calls = max(1, round(round_seconds / max(unit, 1e-6)))
    steps_per_round = v.steps_per_loop * calls
    steps_per_round = v.steps_per_loop * -(-max(steps_per_round, 20) // v.steps_per_loop)
  ta, tb = [], []
  for _ in range(rounds):
    ta.append(trainer.run(steps_per_round))
    tb.append(plain.run(steps_per_round))
  images = steps_per_round * v.batch_size
  train, ref = _timing(images, ta, steps_per_round), _timing(images, tb, steps_per_round)
  ratios = [b / a for a, b in zip(ta, tb)]
  per_image = counted["per_image_train"]
  return {
      **dataclasses.asdict(v),
      "strategy": type(trainer.trainer.strategy).__name__,
      "replicas": trainer.trainer.strategy.num_replicas_in_sync,
      "xla": trainer.xla,
      "steps_per_round": steps_per_round,
      "compile_seconds": compile_seconds,
      "train": train,
      "plain": ref,
      "speedup_vs_plain": statistics.median(ratios),
      "speedup_vs_plain_min": min(ratios),
      "speedup_vs_plain_max": max(ratios),
      "flops_per_image": per_image,
      "train_gflops_per_sec": per_image * train["images_per_sec"] / 1e9,
      "plain_gflops_per_sec": per_image * ref["images_per_sec"] / 1e9,
      "fraction_of_matmul_peak": None,  # Set by the parent, which has the matmul figure.
  }


# ---- one replica count (a worker process) -------------------------------------------------------


def _load_average():
  try:
    return list(os.getloadavg())
  except OSError:
    return None


def run_worker(config, replicas: int, variants: list, host_fields: bool) -> dict:
  """Times `variants` (all with this replica count) in this process."""
  short = _SHORT.value
  strategy_name = "mirrored" if replicas > 1 else config.strategy
  probe = _variant_config(config, Variant(config.batch_size, True, 1, replicas, "none"),
                          strategy_name)
  distribution.configure_host_devices(probe)
  strategy = distribution.create_strategy(probe)
  tf.keras.utils.set_random_seed(config.seed)
  builder = sources.load_builder(config)
  load_before = _load_average()
  # --short checks the fields in seconds: the cache is filled first only for tiny splits.
  warm_examples = min(_WARM_EXAMPLES.value, 1000) if short else _WARM_EXAMPLES.value
  out = {"variants": []}
  rounds = 2 if short else _ROUNDS.value
  seconds = 0.05 if short else _ROUND_SECONDS.value
  if host_fields:
    out["matmul"] = flops.matmul_gflops(256 if short else _MATMUL_SIZE.value, rounds, seconds)
  batch_sizes = sorted({v.batch_size for v in variants})
  train_state.set_precision("none")
  counted = {b: flops.count_flops(config, b) for b in batch_sizes}
  if host_fields:
    out["flops"] = {str(b): f for b, f in counted.items()}
    out["input_pipeline"] = {
        str(b): pipeline_rate(builder, config, b, warm_examples, seconds)
        for b in batch_sizes
    }
  for b in batch_sizes:
    # One input stream per side for every variant of this batch size, with its cache filled
    # first (when the split is small enough), so that every variant is timed in steady state.
    c = _variant_config(config, Variant(b, True, 1, replicas, "none"), strategy_name)
    train_it = iter(strategy.distribute_datasets_from_function(
        input_pipeline.train_dataset_fn(builder, c, 0)))
    # The tutorial's loop takes float images from the host (its step does not scale uint8).
    plain_it = iter(input_pipeline.train_dataset_fn(builder, _float_feed(c), 0)(
        tf.distribute.InputContext()))
    batches, count = _epoch_batches(builder, c, b)
    if count <= warm_examples:
      _drain(train_it, tf.constant(batches))
      _drain(plain_it, tf.constant(batches))
    plain_by_precision = {}
    for v in [v for v in variants if v.batch_size == b]:
      vc = _variant_config(config, v, strategy_name)
      train_state.set_precision(v.mixed_precision)
      if v.mixed_precision not in plain_by_precision:
        # The plain loop runs on one device: the tutorial's loop has no strategy.
        plain_strategy = (strategy if isinstance(strategy, tf.distribute.TPUStrategy) else
                          tf.distribute.get_strategy())
        plain_by_precision[v.mixed_precision] = _Plain(vc, plain_strategy, plain_it)
      trainer = _Trainer(vc, strategy, train_it)
      record = time_variant(v, trainer, plain_by_precision[v.mixed_precision], rounds, seconds,
                            short, counted[b])
      logging.info("%s: %.0f images/s vs plain %.0f (x%.2f)", v,
                   record["train"]["images_per_sec"], record["plain"]["images_per_sec"],
                   record["speedup_vs_plain"])
      out["variants"].append(record)
      train_state.set_precision("none")
  out["load_average"] = [load_before, _load_average()]
  out["devices"] = [d.name for d in tf.config.list_logical_devices()]
  return out


# ---- the parent: one worker process per replica count -------------------------------------------


def _summary(variants, config) -> dict:
  """Per batch size: the config's own setting against the plain loop, and the fastest variant.

  The config's own setting is its jit_compile with its steps_per_loop (the largest timed), in
  float32 on one replica: what `python -m vae_dist.main` runs.
  """
  out = {}
  for b in sorted({v["batch_size"] for v in variants}):
    mine = [v for v in variants if v["batch_size"] == b]
    spl = max(v["steps_per_loop"] for v in mine)
    # What jit_compile='auto' means on this host's first replica (use_xla under one device).
    own_jit = steps.use_xla(config.jit_compile, tf.distribute.get_strategy())
    default = [v for v in mine if v["jit_compile"] == own_jit and v["replicas"] == 1
               and v["mixed_precision"] == "none" and v["steps_per_loop"] == spl]
    best = max(mine, key=lambda v: v["train"]["images_per_sec"])
    entry = {"fastest_variant": {k: best[k] for k in ("jit_compile", "steps_per_loop", "replicas",
                                                       "mixed_precision")},
             "fastest_speedup_vs_plain": best["speedup_vs_plain"],
             "fastest_images_per_sec": best["train"]["images_per_sec"]}
    if default:
      v = default[0]
      entry.update({
          "train_images_per_sec": v["train"]["images_per_sec"],
          "plain_images_per_sec": v["plain"]["images_per_sec"],
          "speedup_vs_plain": v["speedup_vs_plain"],
          "speedup_vs_plain_min": v["speedup_vs_plain_min"],
          "speedup_vs_plain_max": v["speedup_vs_plain_max"],
          "fraction_of_matmul_peak": v["fraction_of_matmul_peak"],
      })
    out[str(b)] = entry
  return out


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor()


def _host_fields(workers) -> dict:
  return {
      "cpu_count": os.cpu_count(),
      "cpu_model": _cpu_model(),
      "platform": platform.platform(),
      "env": {k: os.environ.get(k) for k in ("XLA_FLAGS", "TF_ENABLE_ONEDNN_OPTS",
                                             "OMP_NUM_THREADS") if os.environ.get(k)},
      "devices": {str(r): w["devices"] for r, w in workers.items()},
      "load_average": {str(r): w["load_average"] for r, w in workers.items()},
      "load_average_at_end": _load_average(),
  }


def run_parent(config, argv) -> dict:
  variants = variant_grid(config, _SHORT.value)
  replica_counts = sorted({v.replicas for v in variants}, key=_ints(_REPLICAS.value).index)
  result = {
      "benchmark": "benchmarks/speed.py",
      "vae_dist_version": vae_dist.__version__,
      "tensorflow_version": tf.__version__,
      "config": config.name,
      "dataset": config.dataset,
      "short": _SHORT.value,
      "command": " ".join(["python benchmarks/speed.py"] + argv[1:]),
  }
  checks.validate(config)
  if config.cache == "device":
    # This benchmark times the host's image input and the step fed from it; with 'device' the
    # host sends row numbers, which benchmarks/step_feed.py --cache=device measures.
    raise errors.ConfigError("cache", "'device' is measured by benchmarks/step_feed.py "
                             "--cache=device; this benchmark needs 'auto', 'memory', 'disk' or "
                             "'none'.")
  # Prepared here, once: the workers then only read it (and may run at the same time). What
  # preparing prints goes to stderr: stdout carries the JSON alone.
  with contextlib.redirect_stdout(sys.stderr):
    sources.load_builder(config)
  if _INPUT_SIZES.value:
    result["input_per_core"] = input_rates.measure(
        config, _ints(_INPUT_SIZES.value), _ints(_INPUT_CORES.value),
        seconds=0.2 if _SHORT.value else _INPUT_SECONDS.value,
        step_batch=_INPUT_STEP_BATCH.value, short=_SHORT.value)
  if _INPUT_ONLY.value:
    result["host"] = _host_fields({})
    return result
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(
      p for p in (os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                  env.get("PYTHONPATH")) if p)
  workers = {}
  with tempfile.TemporaryDirectory() as tmp:
    procs = []
    for i, r in enumerate(replica_counts):
      path = os.path.join(tmp, f"replicas_{r}.json")
      cmd = [sys.executable, os.path.abspath(__file__), *argv[1:], f"--worker_replicas={r}",
             f"--worker_output={path}"]
      if i == 0:
        cmd.append("--worker_host_fields")
      # The parent's stdout carries the JSON alone: what the workers print goes to stderr.
      procs.append((r, path, subprocess.Popen(cmd, env=env, stdout=sys.stderr)))
      if not _SHORT.value:
        # Timed runs one at a time; --short only checks fields, so its workers overlap.
        procs[-1][2].wait()
    for r, path, proc in procs:
      if proc.wait() != 0:
        raise RuntimeError(f"benchmark worker for {r} replica(s) failed (exit {proc.returncode})")
      with open(path) as f:
        workers[r] = json.load(f)
  first = workers[replica_counts[0]]
  result["host"] = _host_fields(workers)
  for key in ("matmul", "flops", "input_pipeline"):
    result[key] = first[key]
  result["variants"] = [v for r in replica_counts for v in workers[r]["variants"]]
  for v in result["variants"]:
    v["fraction_of_matmul_peak"] = v["train_gflops_per_sec"] / result["matmul"]["gflops_per_sec"]
  result["summary"] = _summary(result["variants"], config)
  return result


def main(argv):
  config = _CONFIG.value
  if _WORKER_REPLICAS.value:
    r = _WORKER_REPLICAS.value
    variants = [v for v in variant_grid(config, _SHORT.value) if v.replicas == r]
    out = run_worker(config, r, variants, _WORKER_HOST_FIELDS.value)
    with open(_WORKER_OUTPUT.value, "w") as f:
      json.dump(out, f)
    return
  del argv  # Flags only; the workers get the same command line (sys.argv).
  try:
    result = run_parent(config, sys.argv)
  except errors.VaeDistError as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)
  text = json.dumps(result, indent=2, sort_keys=True)
  if _OUTPUT.value:
    os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)), exist_ok=True)
    with open(_OUTPUT.value, "w") as f:
      f.write(text + "\n")
  print(text, flush=True)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)

"""Host cores each recipe needs to keep an accelerator host busy, from measured per-core rates.

Reads the JSON of `python benchmarks/speed.py --input_only --input_sizes=...` runs (the
`input_per_core` field: per-core images/s of the train pipeline from raw prepared data, the disk
cache, the memory cache with config.shuffle='buffer' and with 'full', and the train FLOPs per
image) and prints the tables of BUILD_NOTES.md:

  images/s a host consumes = utilisation x peak bf16 FLOP/s of its chips / train FLOPs per image
  host cores needed         = that rate / images/s per host core (each kind of input)

  python benchmarks/cost_model.py --utilisation=0.3 \
      /tmp/cartoon_rates.json /tmp/fmnist_rates.json [newer rate files...] \
      [--step_feed=/tmp/feed/fmnist.json,/tmp/feed/mnist.json,/tmp/feed/cartoon.json]

With --device_feed (runs of `step_feed.py --cache=device`) a last table does the same for
config.cache='device', where the input carries row numbers.

With --step_feed (the JSON of `python benchmarks/step_feed.py` runs) two more tables compare
the train steps per second each host must run with what one host's input can feed (see
step_capacity), at the recipes' own global batch and at a per-replica batch of 128:

  steps/s needed = images/s above / global batch (R replicas = the host's chips)

Chip peaks and host vCPUs are the vendors' published figures (sources in BUILD_NOTES.md); the
per-core rates are this machine's (one vCPU of the benchmark host), so the core counts carry its
per-core speed over to the accelerator hosts' CPUs.
"""
import argparse
import json

# name: (chips, peak bf16 TFLOP/s per chip, host vCPUs, host-to-chip GB/s per chip).
HOSTS = {
    "v4-8": (4, 275.0, 240, 15.75),  # PCIe Gen3 x16 per chip.
    "v5e-8": (8, 197.0, 224, None),
    "8x A100": (8, 312.0, 96, 31.5),  # a2-highgpu-8g; PCIe Gen4 x16 per GPU.
}
# Memory per chip, GiB (v4: 32 GiB HBM2, v5e: 16 GiB HBM2, a2-highgpu-8g: A100 40 GB).
HBM_GIB = {"v4-8": 32.0, "v5e-8": 16.0, "8x A100": 40e9 / 2**30}
# Train examples of the recipes' data sets (cache='device' holds them on every chip).
TRAIN_EXAMPLES = {"configs/mnist.py": 60_000, "configs/fashion_mnist.py": 60_000,
                  "configs/cartoon.py": 10_000}

# Recipe: (config, image size, channels). The 64 and 128 rows are the Cartoon recipe's model and
# pipeline at those sizes (what a CelebA or image-folder run at that size costs).
RECIPES = {
    "mnist (tutorial model)": ("configs/mnist.py", 28, 1),
    "fashion_mnist": ("configs/fashion_mnist.py", 28, 1),
    "cartoon model at 64": ("configs/cartoon.py", 64, 3),
    "cartoon model at 128": ("configs/cartoon.py", 128, 3),
    "cartoon 256": ("configs/cartoon.py", 256, 3),
}
# The recipes' global batch (config.batch_size); the 64/128 rows keep the Cartoon recipe's.
GLOBAL_BATCH = {"configs/mnist.py": 32, "configs/fashion_mnist.py": 128, "configs/cartoon.py": 128}

# configs/mnist.py's train FLOPs per image, counted (tests/test_benchmark.py).
MNIST_TUTORIAL_TRAIN_FLOPS = 32_699_904

# Bytes per pixel channel the host sends to the chips (config.feed_dtype).
FEED_BYTES = {"uint8": 1, "float32": 4}


def load(paths):
  """({(config name, size): pipeline entry}, {(config name, size): train FLOPs per image}).

  A later file's rates replace an earlier one's; FLOPs (which do not change with the input
  pipeline) come from any file that measured the train step.
  """
  rates, flops = {}, {}
  for path in paths:
    with open(path) as f:
      r = json.load(f)
    for size, entry in r["input_per_core"]["sizes"].items():
      key = (r["config"], int(size))
      if entry.get("pipeline"):
        rates[key] = entry["pipeline"]
      if "train_step" in entry:
        flops[key] = entry["train_step"]["train_flops_per_image"]
  return rates, flops


def load_step_feed(paths):
  """{(size, replicas, per-replica batch, cores, k setting): row of benchmarks/step_feed.py}."""
  rows = {}
  for path in paths:
    with open(path) as f:
      for run in json.load(f)["runs"]:
        for row in run["rows"]:
          key = (run["size"], run["replicas"], row["per_replica_batch"], run["cores"],
                 row["k_setting"])
          rows[key] = row
  return rows


def step_capacity(feed, size: int, replicas: int, per_replica: int, vcpus: int):
  """What one host's input can feed, in train steps/s, from the step_feed rows; None if unmeasured.

  Two limits, each from its own measurement:
  - per element (tf.data's one-thread stages and the distributed iterator dealing elements to
    the R replicas): the most elements/s any k=1 run with R replicas reached (the smallest
    batches, where the pixels cost least; it grew 1.2x from 1 to 2 cores), times k / R;
  - per image (the parallel gather and copy): images per CPU-second of the automatic k on one
    pinned core, times the host's vCPUs, / the images of a step.
  Returns (elements/s ceiling, k, steps/s per element limit, images per core-second,
  steps/s per image limit, {cores: measured steps/s with auto k}).
  """
  ones = [row for key, row in feed.items() if key[1] == replicas and key[4] == "1"]
  autos = {key[3]: row for key, row in feed.items()
           if key[:3] == (size, replicas, per_replica) and key[4] == "auto"}
  if not ones or 1 not in autos:
    return None
  elements = max(row["input"]["steps_per_sec"] for row in ones) * replicas
  k = autos[1]["steps_per_element"]
  per_core = autos[1]["input"]["steps_per_cpu_sec"] * replicas * per_replica
  measured = {cores: row["input"]["steps_per_sec"] for cores, row in sorted(autos.items())}
  return (elements, k, elements * k / replicas, per_core,
          per_core * vcpus / (replicas * per_replica), measured)


def load_device_feed(paths):
  """{(replicas, per-replica batch, steps_per_loop, train examples, cores): row} of step_feed.py
  --cache=device runs. The image size is not in the key: with row numbers as input the host
  never touches an image (measured: 64, 128 and 256 px fed alike), while the part's size is
  (the permutation's cost per row grows as the part shrinks: 2.6M rows/s for 2,000 examples,
  7.2M for 10,000, 8.3M for 60,000 on one core).
  """
  rows = {}
  for path in paths:
    with open(path) as f:
      out = json.load(f)
    if out.get("cache") != "device":
      continue
    for run in out["runs"]:
      for row in run["rows"]:
        rows[(run["replicas"], row["per_replica_batch"], out["steps_per_loop"],
              run.get("train_examples"), run["cores"])] = row
  return rows


def print_device_table(demands, device_feed, per_replica_batch: int = 0):
  """cache='device': steps/s needed against the row-number input measured at each host loop.

  The host sends row numbers only (4 bytes an image), so the bytes to the chips drop out and the
  host's work is the permutation's rows (a parallel map) plus one small element per replica and
  host loop. Measured with R logical devices on 1 and 2 pinned cores (input: elements read in a
  tf.function). Cores needed: where Amdahl's law through the 1- and 2-core rates reaches the
  steps/s needed (cores_needed; beyond 2 cores is not measurable on this machine).
  """
  which = (f"a per-replica batch of {per_replica_batch}" if per_replica_batch else
           "the recipes' own global batch")
  print("\ncache='device', shuffle='full' (row numbers as input, one element per host loop), "
        f"{which}; part = the train split at the model's size, on every chip")
  print("| recipe | host | R x B | steps/s needed | host loop | steps/s fed: 1 core / 2 cores | "
        "cores needed (host vCPUs) | input keeps up | part / memory per chip |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
  loops = sorted({key[2] for key in device_feed})
  for recipe, host, config, size, chips, demand, vcpus in demands:
    per_replica = per_replica_batch or GLOBAL_BATCH[config] // chips
    needed = demand / (per_replica * chips)
    channels = 1 if size == 28 else 3
    examples = TRAIN_EXAMPLES[config]
    part_gib = examples * size * size * channels / 2**30
    for loop in loops:
      rows = {cores: device_feed[key] for cores in (1, 2)
              if (key := (chips, per_replica, loop, examples, cores)) in device_feed}
      if 1 not in rows:
        continue
      fed = {cores: row["input"]["steps_per_sec"] for cores, row in rows.items()}
      cores = cores_needed(fed, needed)
      if max(fed.values()) >= needed:
        verdict = f"yes, measured ({max(fed.values()) / needed:.1f}x)"
      elif cores <= vcpus:
        verdict = f"yes on ~{cores:.0f} cores (estimate)"
      else:
        verdict = f"short: ~{cap(fed):,.0f} at most (estimate)"
      text = " / ".join(f"{fed[c]:,.0f}" if c in fed else "-" for c in (1, 2))
      need_text = "-" if cores == float("inf") else f"{cores:.1f}"
      print(f"| {recipe} | {host} | {chips} x {per_replica} | {needed:,.0f} | {loop} | {text} | "
            f"{need_text} ({vcpus}) | {verdict} | {part_gib:.2f} of {HBM_GIB[host]:.0f} GiB |")


def serial_share(fed: dict) -> float:
  """Amdahl's serial share s from the speed-up 2 cores gave: 1 / (s + (1 - s) / 2).

  Without a 2-core rate the rate is taken to scale with cores (s = 0). An estimate from two
  points, not a measurement.
  """
  speedup = min(2.0, max(1.0, fed[2] / fed[1])) if 2 in fed else 2.0
  return 2.0 / speedup - 1.0


def cap(fed: dict) -> float:
  """The most steps/s Amdahl's law through the 1- and 2-core rates allows on any core count."""
  serial = serial_share(fed)
  return fed[1] / serial if serial > 0 else float("inf")


def cores_needed(fed: dict, needed: float) -> float:
  """Cores at which the rate fed[1] / (s + (1 - s) / N) reaches `needed` (inf: never)."""
  serial = serial_share(fed)
  share = fed[1] / needed  # What s + (1 - s) / N must come down to.
  if share <= serial:
    return float("inf")
  return (1.0 - serial) / (share - serial)


def print_step_table(demands, feed, per_replica_batch: int = 0):
  """Steps/s each host needs against what its input can feed (step_capacity)."""
  which = (f"a per-replica batch of {per_replica_batch}" if per_replica_batch else
           "the recipes' own global batch")
  print(f"\nsteps/s at {which}; input from memory with shuffle='full', automatic "
        "steps_per_element")
  print("| recipe | host | global batch (R x B) | steps/s needed | per element: elements/s "
        "(k=1), k, steps/s | per image: images/core-s, steps/s on all vCPUs | measured here, "
        "auto k (1 / 2 cores) | input keeps up |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- |")
  for recipe, host, config, size, chips, demand, vcpus in demands:
    per_replica = per_replica_batch or GLOBAL_BATCH[config] // chips
    batch = per_replica * chips
    needed = demand / batch
    cap = step_capacity(feed, size, chips, per_replica, vcpus)
    if cap is None:
      continue
    elements, k, by_element, per_core, by_image, measured = cap
    short = [f"{needed / by_element:.1f}x short per element" if by_element < needed else "",
             f"{needed / by_image:.1f}x short per image" if by_image < needed else ""]
    verdict = "; ".join(x for x in short if x) or (
        f"yes ({min(by_element, by_image) / needed:.1f}x)")
    seen = " / ".join(f"{v:,.0f}" for v in measured.values())
    print(f"| {recipe} | {host} | {batch} ({chips} x {per_replica}) | {needed:,.0f} | "
          f"{elements:,.0f}, {k}, {by_element:,.0f} | {per_core:,.0f}, {by_image:,.0f} | {seen} | "
          f"{verdict} |")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("files", nargs="+")
  parser.add_argument("--utilisation", type=float, default=0.3)
  parser.add_argument("--cores", default="1", help="Which pinned-cores measurement to use.")
  parser.add_argument("--feed_dtype", default="uint8", choices=sorted(FEED_BYTES))
  parser.add_argument("--step_feed", default="", help="step_feed.py JSON files, comma-separated")
  parser.add_argument("--device_feed", default="",
                      help="step_feed.py --cache=device JSON files, comma-separated")
  args = parser.parse_args()
  rates, flops_by_key = load(args.files)
  rows, demands = [], []
  for recipe, (config, size, channels) in RECIPES.items():
    name = config.split("/")[-1][:-3]
    key = ("fashion_mnist" if name == "mnist" else name, size)
    per_core = rates[key][args.cores]["images_per_sec_per_core"]
    flops = MNIST_TUTORIAL_TRAIN_FLOPS if name == "mnist" else flops_by_key[key]
    for host, (chips, peak, vcpus, link) in HOSTS.items():
      demand = args.utilisation * chips * peak * 1e12 / flops
      # Rate files from before shuffle='full' have no memory_full rate: shown as '-'.
      need = {k: demand / per_core[k] if k in per_core else None
              for k in ("raw", "disk", "memory", "memory_full")}
      gbs = demand * size * size * channels * FEED_BYTES[args.feed_dtype] / 1e9
      rows.append((recipe, host, flops, demand, need, vcpus, gbs, chips * link if link else None))
      demands.append((recipe, host, config, size, chips, demand, vcpus))
  print(f"utilisation {args.utilisation:.0%}; per-core rates from {args.cores} pinned core(s); "
        f"{args.feed_dtype} to the chips")
  print("| recipe | host | train GFLOP/image | images/s at that utilisation | cores needed: "
        "raw / disk cache / memory cache / memory, shuffle=full | host vCPUs | "
        f"{args.feed_dtype} to the chips, GB/s (link) |")
  print("| --- | --- | --- | --- | --- | --- | --- |")
  for recipe, host, flops, demand, need, vcpus, gbs, link in rows:
    link_text = f"{link:.0f}" if link else "?"
    cores = " / ".join("-" if need[k] is None else f"{need[k]:,.0f}"
                       for k in ("raw", "disk", "memory", "memory_full"))
    print(f"| {recipe} | {host} | {flops / 1e9:.3f} | {demand:,.0f} | {cores} | {vcpus} | "
          f"{gbs:,.1f} ({link_text}) |")
  if args.step_feed:
    feed = load_step_feed(args.step_feed.split(","))
    print_step_table(demands, feed)
    print_step_table(demands, feed, per_replica_batch=128)
  if args.device_feed:
    device_feed = load_device_feed(args.device_feed.split(","))
    print_device_table(demands, device_feed)
    print_device_table(demands, device_feed, per_replica_batch=128)


if __name__ == "__main__":
  main()

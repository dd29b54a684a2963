"""Host cores each recipe needs to keep an accelerator host busy, from measured per-core rates.

Reads the JSON of `python benchmarks/speed.py --input_only --input_sizes=...` runs (the
`input_per_core` field: per-core images/s of the train pipeline from raw prepared data, the disk
cache, the memory cache with config.shuffle='buffer' and with 'full', and the train FLOPs per
image) and prints the tables of BUILD_NOTES.md:

  images/s a host consumes = utilisation x peak bf16 FLOP/s of its chips / train FLOPs per image
  host cores needed         = that rate / images/s per host core (each kind of input)

  python benchmarks/cost_model.py --utilisation=0.3 \
      /tmp/cartoon_rates.json /tmp/fmnist_rates.json [newer rate files...]

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

# Recipe: (config, image size, channels). The 64 and 128 rows are the Cartoon recipe's model and
# pipeline at those sizes (what a CelebA or image-folder run at that size costs).
RECIPES = {
    "mnist (tutorial model)": ("configs/mnist.py", 28, 1),
    "fashion_mnist": ("configs/fashion_mnist.py", 28, 1),
    "cartoon model at 64": ("configs/cartoon.py", 64, 3),
    "cartoon model at 128": ("configs/cartoon.py", 128, 3),
    "cartoon 256": ("configs/cartoon.py", 256, 3),
}

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


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("files", nargs="+")
  parser.add_argument("--utilisation", type=float, default=0.3)
  parser.add_argument("--cores", default="1", help="Which pinned-cores measurement to use.")
  parser.add_argument("--feed_dtype", default="uint8", choices=sorted(FEED_BYTES))
  args = parser.parse_args()
  rates, flops_by_key = load(args.files)
  rows = []
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


if __name__ == "__main__":
  main()

"""Host cores each recipe needs to keep an accelerator host busy, from measured per-core rates.

Reads the JSON of `python -m vae_dist.benchmark --input_only --input_sizes=...` runs (the
`input_per_core` field: per-core images/s of the train pipeline from raw prepared data, the disk
cache and the memory cache, and the train FLOPs per image) and prints the tables of BUILD_NOTES.md:

  images/s a host consumes = utilisation x peak bf16 FLOP/s of its chips / train FLOPs per image
  host cores needed         = that rate / images/s per host core (each kind of input)

  python benchmarks/cost_model.py --utilisation=0.3 \
      /tmp/cartoon_rates.json /tmp/fmnist_rates.json

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

# Recipe: (config, image size, channels, the benchmark file's key for its FLOPs and rates).
RECIPES = {
    "mnist (tutorial model)": ("configs/mnist.py", 28, 1),
    "fashion_mnist": ("configs/fashion_mnist.py", 28, 1),
    "cartoon 256": ("configs/cartoon.py", 256, 3),
}

# configs/mnist.py's train FLOPs per image, counted (tests/test_benchmark.py).
MNIST_TUTORIAL_TRAIN_FLOPS = 32_699_904


def load(paths):
  """{(config name, size): entry} from benchmark outputs."""
  out = {}
  for path in paths:
    with open(path) as f:
      r = json.load(f)
    for size, entry in r["input_per_core"]["sizes"].items():
      out[(r["config"], int(size))] = entry
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("files", nargs="+")
  parser.add_argument("--utilisation", type=float, default=0.3)
  parser.add_argument("--cores", default="1", help="Which pinned-cores measurement to use.")
  args = parser.parse_args()
  data = load(args.files)
  rows = []
  for recipe, (config, size, channels) in RECIPES.items():
    name = config.split("/")[-1][:-3]
    key = ("fashion_mnist" if name == "mnist" else name, size)
    entry = data[key]
    rates = entry["pipeline"][args.cores]["images_per_sec_per_core"]
    flops = (MNIST_TUTORIAL_TRAIN_FLOPS if name == "mnist" else
             entry["train_step"]["train_flops_per_image"])
    for host, (chips, peak, vcpus, link) in HOSTS.items():
      demand = args.utilisation * chips * peak * 1e12 / flops
      need = {k: demand / rates[k] for k in ("raw", "disk", "memory")}
      f32_gbs = demand * size * size * channels * 4 / 1e9
      rows.append((recipe, host, flops, demand, need, vcpus, f32_gbs,
                   chips * link if link else None))
  print(f"utilisation {args.utilisation:.0%}; per-core rates from {args.cores} pinned core(s)")
  print("| recipe | host | train GFLOP/image | images/s at that utilisation | cores needed: "
        "raw / disk cache / memory cache | host vCPUs | float32 to the chips, GB/s (link) |")
  print("| --- | --- | --- | --- | --- | --- | --- |")
  for recipe, host, flops, demand, need, vcpus, gbs, link in rows:
    link_text = f"{link:.0f}" if link else "?"
    print(f"| {recipe} | {host} | {flops / 1e9:.3f} | {demand:,.0f} | "
          f"{need['raw']:,.0f} / {need['disk']:,.0f} / {need['memory']:,.0f} | {vcpus} | "
          f"{gbs:,.0f} ({link_text}) |")


if __name__ == "__main__":
  main()

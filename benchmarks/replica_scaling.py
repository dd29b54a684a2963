"""Images/s of whole training runs on 1 device against N logical CPU devices, same global batch.

  python benchmarks/replica_scaling.py [--replicas=2] [--batch_size=32] [--rounds=3] \
      [--steps=1000] [--repo=DIR] [--output=FILE]

Each round runs `python -m vae_dist.main` (configs/mnist.py, the tutorial model, on Fashion-MNIST
from Debian's dataset-fashion-mnist or --manual_dir) once on the default strategy and once under
MirroredStrategy over --replicas logical CPUs, alternating, and reads the training rate the run
itself reports (train/examples_per_sec of every metrics.jsonl line but the first, which includes
tracing). --repo runs another checkout's code the same way (for before/after figures). Prints
one JSON object: per round and replica count the median rate, and the ratio N / 1.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile

from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_REPLICAS = flags.DEFINE_integer("replicas", 2, "Logical CPU devices of the mirrored runs.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Global batch of every run.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Alternating rounds (1 device, then N).")
_STEPS = flags.DEFINE_integer("steps", 1000, "Train steps per run (logged every 125).")
_REPO = flags.DEFINE_string("repo", ROOT, "Checkout whose vae_dist runs.")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", "", "Fashion-MNIST IDX files ('' = Debian's).")
_OUTPUT = flags.DEFINE_string("output", "", "Also write the JSON here.")


def _run(workdir, replicas, data_dir):
  args = [sys.executable, "-m", "vae_dist.main", "--config=configs/mnist.py",
          f"--workdir={workdir}", "--config.dataset=fashion_mnist",
          f"--config.data_dir={data_dir}", f"--config.batch_size={_BATCH.value}",
          f"--config.num_train_steps={_STEPS.value}", "--config.steps_per_loop=125",
          "--config.log_every_steps=125", f"--config.eval_every_steps={_STEPS.value}",
          f"--config.checkpoint_every_steps={_STEPS.value}", "--config.eval_num_examples=1000",
          "--config.num_image_examples=0", "--config.num_scatter_examples=0"]
  if _MANUAL_DIR.value:
    args.append(f"--config.manual_dir={_MANUAL_DIR.value}")
  if replicas > 1:
    args += ["--config.strategy=mirrored", f"--config.num_cpu_devices={replicas}"]
  else:
    args += ["--config.strategy=default"]
  env = dict(os.environ, PYTHONPATH=_REPO.value, TF_CPP_MIN_LOG_LEVEL="2",
             CUDA_VISIBLE_DEVICES="")
  proc = subprocess.run(args, cwd=_REPO.value, env=env, capture_output=True, text=True)
  if proc.returncode != 0:
    raise SystemExit(proc.stderr[-3000:])
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rates = [json.loads(l)["train/examples_per_sec"] for l in f if "train/examples_per_sec" in l]
  return statistics.median(rates[1:] or rates)


def main(argv):
  del argv
  out = {"replicas": _REPLICAS.value, "batch_size": _BATCH.value, "repo": _REPO.value,
         "rounds": []}
  with tempfile.TemporaryDirectory() as tmp:
    data_dir = os.path.join(tmp, "tfds")
    for r in range(_ROUNDS.value):
      row = {"load_average": os.getloadavg()[0]}
      for n in (1, _REPLICAS.value):
        row[str(n)] = _run(os.path.join(tmp, f"r{r}_{n}"), n, data_dir)
      row["ratio"] = row[str(_REPLICAS.value)] / row["1"]
      out["rounds"].append(row)
      print(json.dumps(row), file=sys.stderr, flush=True)
  out["median_ratio"] = statistics.median(r["ratio"] for r in out["rounds"])
  text = json.dumps(out, indent=2)
  print(text)
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  app.run(main)

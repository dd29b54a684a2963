"""Time to prepare a Cartoon Set archive as a function of the cores the preparation may use.

Each preparation runs in a fresh process pinned (CPU affinity) to the first N cores, into a fresh
TFDS data dir, so the builder's thread pool (one thread per usable core) and TensorFlow see N
cores. Prints one JSON object: for each N, the seconds and seconds per 1,000 images, and the
process's CPU seconds and how many cores it kept busy on average.

  python benchmarks/cartoon_like_data.py --out=/tmp/cartoon_manual --n=2000
  python benchmarks/prepare_scale.py --manual_dir=/tmp/cartoon_manual --cores=1,2
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_PREPARE = """
import sys, time
from vae_dist.config import defaults
from vae_dist.data import sources
c = defaults.base_config()
c.dataset, c.dataset_config = 'cartoon_set', '10k'
c.manual_dir, c.data_dir = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
b = sources.load_builder(c)
n = sum(s.num_examples for s in b.info.splits.values())
print('RESULT', n, time.perf_counter() - t0)
"""


def prepare(manual_dir: str, cores) -> dict:
  with tempfile.TemporaryDirectory(prefix="vae_dist_prepare_") as data_dir:
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    t0 = time.perf_counter()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, "-c", _PREPARE, manual_dir, data_dir], env=env,
                          capture_output=True, text=True, check=False,
                          preexec_fn=lambda: os.sched_setaffinity(0, cores))
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
  if proc.returncode != 0:
    raise RuntimeError(proc.stderr[-3000:])
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
  _, n, seconds = line.split()
  n, seconds = int(n), float(seconds)
  return {"cores": len(cores), "images": n, "prepare_seconds": seconds,
          "seconds_per_1000_images": 1000 * seconds / n, "process_seconds": wall,
          # CPU time of the whole process (start-up and import included): on a shared machine
          # the wall time also holds other processes' turns on the same cores.
          "process_cpu_seconds": cpu, "cpu_seconds_per_1000_images": 1000 * cpu / n,
          "cores_busy": cpu / wall,
          "load_average_after": list(os.getloadavg())}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--manual_dir", required=True)
  parser.add_argument("--cores", default="1,2")
  args = parser.parse_args()
  available = sorted(os.sched_getaffinity(0))
  out = {"load_average_before": list(os.getloadavg()), "runs": []}
  for n in (int(c) for c in args.cores.split(",")):
    out["runs"].append(prepare(args.manual_dir, available[:n]))
  print(json.dumps(out, indent=2))


if __name__ == "__main__":
  main()

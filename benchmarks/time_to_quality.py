"""Time to quality, side by side: the tutorial's recipe against configs/fashion_mnist_fast.py.

  python benchmarks/time_to_quality.py --output=benchmarks/time_to_quality.json
  python benchmarks/time_to_quality.py --order=fast,tutorial,fast --target=-194

Runs `python -m vae_dist.main` for each entry of --order, one after the other on the same
machine (fast, tutorial, fast by default, so that a change of machine load shows up as a
difference between the two fast runs), and records for each:

  wall_seconds     the process, start to exit
  log_seconds      first to last absl log line of the run (what the run's own log says it took;
                   leaves out Python and TensorFlow start-up and process teardown)
  final_elbo       the last eval/elbo in <workdir>/metrics.jsonl
  load_average     1-minute load average before and after (other processes share the CPU)

and the ratio of the fast runs' times to the tutorial's. The tutorial run is long (10 epochs,
18,750 steps at batch 32): about 5 minutes on a quiet 2-core CPU.
"""
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = {
    "tutorial": ["--config=configs/mnist.py", "--config.dataset=fashion_mnist"],
    "fast": ["--config=configs/fashion_mnist_fast.py"],
}

_ORDER = flags.DEFINE_list("order", ["fast", "tutorial", "fast"], "Runs, in order.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/vae_dist_ttq", "Parent of the runs' workdirs.")
_TARGET = flags.DEFINE_float("target", -194.0, "Test ELBO (nats) the runs must reach.")
_OUTPUT = flags.DEFINE_string("output", "", "Also write the JSON here.")
_TIMEOUT = flags.DEFINE_integer("timeout", 3 * 3600, "Seconds before a run is stopped.")

_LOG_TIME = re.compile(r"^[IWEF]\d{4} (\d\d:\d\d:\d\d\.\d+) ")


def _log_seconds(stderr: str):
  times = [m.group(1) for m in map(_LOG_TIME.match, stderr.splitlines()) if m]
  if len(times) < 2:
    return None
  first, last = (datetime.datetime.strptime(t, "%H:%M:%S.%f") for t in (times[0], times[-1]))
  return (last - first).total_seconds() % 86400  # A run across midnight wraps.


def _final_elbo(workdir):
  evals = []
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      record = json.loads(line)
      if "eval/elbo" in record:
        evals.append((record["step"], record["eval/elbo"]))
  return evals[-1][1] if evals else None, evals


def run_recipe(name: str, index: int) -> dict:
  workdir = os.path.join(_WORKDIR.value, f"{index}_{name}")
  subprocess.run(["rm", "-rf", workdir], check=True)
  cmd = [sys.executable, "-m", "vae_dist.main", *RECIPES[name], f"--workdir={workdir}"]
  load_before = os.getloadavg()[0]
  t0 = time.perf_counter()
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=_TIMEOUT.value)
  wall = time.perf_counter() - t0
  if proc.returncode != 0:
    raise RuntimeError(f"{name} run failed:\n{proc.stderr[-3000:]}")
  final, evals = _final_elbo(workdir)
  return {
      "recipe": name,
      "command": " ".join(["python -m vae_dist.main", *RECIPES[name], f"--workdir={workdir}"]),
      "wall_seconds": wall,
      "log_seconds": _log_seconds(proc.stderr),
      "final_elbo": final,
      "evals": evals,
      "reached_target": final is not None and final >= _TARGET.value,
      "load_average": [load_before, os.getloadavg()[0]],
  }


def main(argv):
  del argv
  runs = []
  for i, name in enumerate(_ORDER.value):
    runs.append(run_recipe(name, i))
    print(json.dumps({k: runs[-1][k] for k in ("recipe", "wall_seconds", "log_seconds",
                                              "final_elbo", "load_average")}), file=sys.stderr,
          flush=True)
  result = {"target_elbo": _TARGET.value, "runs": runs}
  tutorial = [r for r in runs if r["recipe"] == "tutorial"]
  fast = [r for r in runs if r["recipe"] == "fast"]
  if tutorial and fast:
    for key in ("wall_seconds", "log_seconds"):
      t = statistics.median(r[key] for r in tutorial)
      result[f"fast_over_tutorial_{key}"] = [r[key] / t for r in fast]
  text = json.dumps(result, indent=2)
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w") as f:
      f.write(text + "\n")
  print(text)


if __name__ == "__main__":
  app.run(main)

"""Bytes a training run uploads to gs:// against the size of what it leaves there.

  python tests/gcs/measure_uploads.py --steps=500,2000 [--out=table.md]

Runs `configs/mnist.py:smoke` on tiny IDX data (local data_dir) with the workdir on the emulator,
logging every 10 steps, evaluating every 250 and checkpointing every 500, and prints per run:
bytes uploaded (the emulator's count of upload request bodies, retries included) for the
checkpoints and for everything else, the final size of the run's files, and the wall time.
"""
import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

import cli  # noqa: E402
import gcs_harness  # noqa: E402

BUCKET = "vae-test"


def measure(ns, flags, steps):
  run = f"run{steps}"
  ns.reset_stats()
  t0 = time.time()
  proc = ns.run(cli.main_args("configs/mnist.py:smoke", f"gs://{BUCKET}/{run}",
                              "--config.dataset=fashion_mnist", *flags,
                              f"--config.num_train_steps={steps}", "--config.steps_per_loop=10",
                              "--config.log_every_steps=10", "--config.eval_every_steps=250",
                              "--config.checkpoint_every_steps=500"), timeout=3600)
  seconds = time.time() - t0
  assert proc.returncode == 0, proc.stderr[-3000:]
  uploaded = ns.stats()["uploaded"]
  final = ns.list(BUCKET, run + "/")
  prefix = f"{BUCKET}/{run}/"

  def split(sizes, strip):
    ckpt = sum(v for k, v in sizes.items() if k[len(strip):].startswith("checkpoints/"))
    return ckpt, sum(sizes.values()) - ckpt

  up_ckpt, up_other = split({k: v for k, v in uploaded.items() if k.startswith(prefix)}, prefix)
  final_ckpt, final_other = split(final, run + "/")
  return {"steps": steps, "seconds": seconds, "up_ckpt": up_ckpt, "up_other": up_other,
          "final_ckpt": final_ckpt, "final_other": final_other,
          "top": sorted(((v, k[len(prefix):]) for k, v in uploaded.items()
                         if k.startswith(prefix)), reverse=True)[:5]}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", default="500,2000")
  args = parser.parse_args()
  tmp = tempfile.mkdtemp(prefix="gcs_measure_")
  flags = cli.prepared_idx_data(tmp, seed=3)
  ns = gcs_harness.GcsNamespace(os.path.join(tmp, "ns"), buckets=[BUCKET]).start()
  try:
    rows = [measure(ns, flags, int(s)) for s in args.steps.split(",")]
  finally:
    ns.stop()
  print("| steps | uploaded, non-checkpoint | final size, non-checkpoint | ratio | "
        "uploaded, checkpoints | final, checkpoints | wall s |")
  print("| --- | --- | --- | --- | --- | --- | --- |")
  for r in rows:
    print(f"| {r['steps']} | {r['up_other']:,} | {r['final_other']:,} | "
          f"{r['up_other'] / max(1, r['final_other']):.1f}x | {r['up_ckpt']:,} | "
          f"{r['final_ckpt']:,} | {r['seconds']:.0f} |")
  for r in rows:
    print(f"largest uploads at {r['steps']} steps:", r["top"])


if __name__ == "__main__":
  main()

"""The command line users run, end to end on tiny data: every strategy, and what it leaves behind."""
import glob
import math
import os
import subprocess

import pytest

import cli
import datagen

SMOKE = ["--config.dataset=fashion_mnist", "--config.num_train_steps=6",
         "--config.eval_every_steps=6", "--config.checkpoint_every_steps=6",
         "--config.log_every_steps=2", "--config.eval_num_examples=-1"]


@pytest.fixture(scope="module")
def idx_data(tmp_path_factory):
  root = tmp_path_factory.mktemp("data")
  datagen.write_idx_dataset(root / "idx", num_train=96, num_test=20, seed=3)
  return str(root / "idx"), str(root / "tfds")


def _check_run(workdir, steps=6):
  records = cli.read_metrics(workdir)
  train = [r for r in records if "train/loss" in r]
  evals = [r for r in records if "eval/elbo" in r]
  assert [r["step"] for r in train] == list(range(2, steps + 1, 2))
  assert all(math.isfinite(r["train/loss"]) for r in train)
  assert evals and evals[-1]["step"] == steps and math.isfinite(evals[-1]["eval/elbo"])
  assert evals[-1]["eval/examples"] == 20
  assert os.path.exists(os.path.join(workdir, "config.json"))
  assert os.path.isdir(os.path.join(workdir, "checkpoints", str(steps)))
  for run in ("train", "eval"):
    assert len(glob.glob(os.path.join(workdir, "tensorboard", run, "events.out.tfevents.*"))) == 1
  return evals[-1]["eval/elbo"]


@pytest.mark.parametrize("devices", [1, 2, 4])
def test_trains_and_evaluates_on_one_two_and_four_devices(tmp_path, idx_data, devices):
  workdir = str(tmp_path / "run")
  strategy = "default" if devices == 1 else "mirrored"
  proc = cli.run_main("configs/mnist.py:smoke", workdir, *SMOKE, *cli.data_flags(*idx_data),
                      f"--config.strategy={strategy}", f"--config.num_cpu_devices={devices}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  _check_run(workdir)
  assert f"with {devices} replica(s)" in proc.stderr
  assert f"per replica {8 // devices}" in proc.stderr
  assert f"Results in {workdir}" in proc.stdout
  assert "tensorboard --logdir" in proc.stdout


def test_multi_worker_mirrored_with_two_local_processes(tmp_path, idx_data):
  workdir = str(tmp_path / "run")
  cluster = [f"127.0.0.1:{port}" for port in cli.free_ports(2)]
  procs = [
      subprocess.Popen(
          cli.main_args("configs/mnist.py:smoke", workdir, *SMOKE, *cli.data_flags(*idx_data),
                        "--config.strategy=multi_worker_mirrored"),
          cwd=cli.ROOT, env=cli.env(TF_CONFIG=cli.tf_config(cluster, i)), stdout=subprocess.PIPE,
          stderr=subprocess.PIPE, text=True) for i in range(2)
  ]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert "with 2 replica(s) on 2 host(s)" in outs[0][1]
  _check_run(workdir)
  # Only the chief reports and writes.
  assert "Results in" in outs[0][0] and "Results in" not in outs[1][0]

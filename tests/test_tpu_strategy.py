"""Which TPU a run connects to, what it says when there is none, and what a slice's hosts read."""
import os

import pytest

import cli
from conftest import load_config
from vae_dist.train import distribution


def test_tpu_address_is_the_flag_then_tpu_name_then_the_local_tpu(monkeypatch):
  config = load_config("mnist", "smoke")
  monkeypatch.delenv("TPU_NAME", raising=False)
  # A Cloud TPU VM: no name needed (TPUClusterResolver(tpu=None) would ask for one).
  assert distribution.tpu_address(config) == "local"
  monkeypatch.setenv("TPU_NAME", "from-env")
  assert distribution.tpu_address(config) == "from-env"
  config.tpu = "grpc://10.0.0.2:8470"
  assert distribution.tpu_address(config) == "grpc://10.0.0.2:8470"


def test_no_tpu_here_says_what_was_tried_and_what_to_pass(tmp_path):
  proc = cli.run_main("configs/mnist.py:smoke", str(tmp_path / "run"),
                      f"--config.data_dir={tmp_path}", "--config.strategy=tpu", timeout=120)
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
  assert proc.returncode == 1 and len(errors) == 1, proc.stderr[-2000:]
  assert "tried the local TPU of this VM" in errors[0] and "--tpu=NAME" in errors[0]
  assert "Traceback" not in proc.stderr and not os.path.exists(tmp_path / "run")


@pytest.mark.parametrize("field,value,flag", [
    ("data_dir", "", "--config.data_dir"),
    ("data_dir", "/home/me/tfds", "--config.data_dir"),
    ("manual_dir", "/mnt/idx", "--config.manual_dir"),
    ("restore_from", "/home/me/old_run/checkpoints", "--config.restore_from"),
])
def test_a_slice_refuses_paths_only_one_host_can_read(field, value, flag):
  config = load_config("mnist", "smoke")
  config.data_dir = "gs://b/tfds"
  config[field] = value
  assert distribution.local_paths_on_a_slice(config, "gs://b/run", hosts=1) is None
  found, message = distribution.local_paths_on_a_slice(config, "gs://b/run", hosts=4)
  assert found == flag and "gs://" in message and "4-host" in message
  assert distribution.local_paths_on_a_slice(config, "/local/run", hosts=4)[0] == "--workdir"


def test_a_slice_accepts_cloud_storage_everywhere():
  config = load_config("mnist", "smoke")
  config.data_dir = "gs://b/tfds"
  config.restore_from = "1200"  # A step of this run, not a path.
  assert distribution.local_paths_on_a_slice(config, "gs://b/run", hosts=16) is None

"""Bad config values stop the run before training, with one message naming the field."""
import os

import pytest

import cli
from conftest import load_config, mirrored
from vae_dist.config import checks
from vae_dist.errors import ConfigError
from vae_dist.train import distribution


@pytest.mark.parametrize("field,value,words", [
    ("strategy", "gpu_cluster", "not one of"),
    ("latent_dim", 0, "positive"),
    ("latent_dim", -3, "positive"),
    ("image_size", 12, "shrink to nothing"),  # Two valid 3x3 stride-2 convs need >= 7 -> ok; 12
    ("batch_size", 0, "positive"),
    ("learning_rate", -1.0, "positive"),
    ("likelihood", "poisson", "not one of"),
    ("binarize", "yes", "not one of"),
    ("mixed_precision", "fp8", "not one of"),
    ("eval_every_steps", 7, "multiple of steps_per_loop"),
    ("dataset", "", "empty"),
])
def test_bad_values_name_the_field(field, value, words):
  config = load_config("mnist")
  if field == "image_size":
    value = 30  # 30 is not divisible by the decoder's total stride 4.
    words = "not divisible"
  if field == "eval_every_steps":
    config.steps_per_loop = 25  # Given explicitly: the cadences must be its multiples.
  config[field] = value
  with pytest.raises(ConfigError) as e:
    checks.validate(config)
  assert str(e.value).startswith(f"config.{field}:")
  assert words in str(e.value)


def test_image_too_small_for_the_encoder():
  config = load_config("cartoon")
  config.image_size = 4  # Divisible by nothing useful: five stride-2 layers need 32.
  with pytest.raises(ConfigError, match=r"^config.image_size:"):
    checks.validate(config)


def test_decoder_output_must_match_channels():
  config = load_config("mnist")
  config.channels = 3
  with pytest.raises(ConfigError, match=r"^config.decoder.filters:.*channels = 3"):
    checks.validate(config)


def test_every_shipped_config_is_valid():
  for name in ("default", "mnist", "fashion_mnist", "cartoon"):
    for arg in (None, "smoke"):
      checks.validate(load_config(name, arg))
  checks.validate(load_config("fashion_mnist", "quick"))


def test_batch_that_does_not_divide_over_replicas_is_refused():
  config = load_config("mnist")
  config.batch_size = 32
  distribution.check_batch(config, mirrored(4))
  config.batch_size = 30
  with pytest.raises(ConfigError, match=r"^config.batch_size: 30 does not divide by the 4 "):
    distribution.check_batch(config, mirrored(4))


@pytest.mark.parametrize("overrides,expect", [
    (["--config.batch_sise=3"], "batch_sise"),
    (["--config.strategy=warp"], "config.strategy: 'warp' is not one of"),
    (["--config.batch_size=6", "--config.num_cpu_devices=4", "--config.strategy=mirrored"],
     "config.batch_size: 6 does not divide by the 4 replicas"),
    (["--config.latent_dim=0"], "config.latent_dim: must be a positive number"),
    (["--config.dataset=no_such_dataset_xyz"], "no_such_dataset_xyz"),
    # Wrong types: refused by the flag parser, naming the override.
    (["--config.batch_size=abc"], "error: flag --config.batch_size=abc: invalid literal for int"),
    (["--config.learning_rate=fast"], "error: flag --config.learning_rate=fast: could not convert"),
    (["--config.jit_compile=maybe"], "config.jit_compile: 'maybe' is not one of 'auto'"),
    # Out of range.
    (["--config.learning_rate=-0.1"], "config.learning_rate: must be a positive number"),
    (["--config.image_size=30"], "config.image_size: 30 is not divisible by the product of "
     "decoder.strides"),
    (["--config.steps_per_loop=3"], "config.log_every_steps: 2 is not a multiple of "
     "steps_per_loop=3"),
    (["--config.skip_nonfinite_steps=-1"], "config.skip_nonfinite_steps:"),
    (["--config.cluster_wait_seconds=0"], "config.cluster_wait_seconds: must be a positive"),
    # A strategy with nothing to run on here.
    (["--config.strategy=tpu"], "config.strategy: 'tpu' but no TPU is reachable"),
])
def test_command_line_stops_before_training_and_writes_nothing(tmp_path, overrides, expect):
  workdir = tmp_path / "run"
  proc = cli.run_main("configs/mnist.py:smoke", str(workdir), f"--config.data_dir={tmp_path}",
                      *overrides, timeout=120)
  assert proc.returncode != 0
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1 and expect in errors[0], proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  assert not os.path.exists(workdir)


def test_missing_split_and_batch_larger_than_the_split(tmp_path):
  import datagen  # pylint: disable=g-import-not-at-top
  datagen.write_idx_dataset(tmp_path / "idx", num_train=16, num_test=4)
  flags = cli.data_flags(str(tmp_path / "idx"), str(tmp_path / "tfds"))
  for overrides, expect in (
      (["--config.eval_split=validation"], "config.eval_split: 'validation' is not a split of "
       "data set 'fashion_mnist', which has test, train."),
      (["--config.batch_size=32"], "config.batch_size: 32 is more than the 16 examples"),
  ):
    workdir = tmp_path / "run"
    proc = cli.run_main("configs/mnist.py:smoke", str(workdir), "--config.dataset=fashion_mnist",
                        *flags, *overrides, timeout=120)
    assert proc.returncode == 1 and expect in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not workdir.exists()


def test_cartoon_config_without_its_archives_stops_with_where_to_get_them(tmp_path):
  workdir = tmp_path / "run"
  proc = cli.run_main("configs/cartoon.py:smoke", str(workdir),
                      f"--config.manual_dir={tmp_path / 'downloads'}",
                      f"--config.data_dir={tmp_path / 'tfds'}", timeout=120)
  assert proc.returncode == 1
  lines = proc.stderr.splitlines()
  starts = [i for i, line in enumerate(lines) if line.startswith("error: ")]
  assert len(starts) == 1, proc.stderr[-2000:]
  message = "\n".join(lines[starts[0]:])
  assert message.startswith("error: Data set 'cartoon_set' (config '10k') was not found.")
  assert "cartoonset10k.tgz" in message and "google.github.io/cartoonset" in message
  assert str(tmp_path / "downloads") in message
  assert "Traceback" not in proc.stderr
  assert not workdir.exists()

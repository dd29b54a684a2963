"""Bad values are refused before anything is written, in one `error:` line.

Config files that are missing, do not parse or raise; arguments a config file does not take;
NaN/Inf in any float field; seeds out of range; an empty --workdir; tool flags out of range; and
a busy port given to the multi-worker launcher.
"""
import glob
import math
import os
import socket
import subprocess
import sys
import time

import pytest

import cli
from conftest import load_config
from faults_helpers import one_error, run_tool
from vae_dist.cli import UsageError
from vae_dist.config import checks
from vae_dist.errors import ConfigError
from vae_dist import generate
from vae_dist.tools import drawings

CONFIG_FILES = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(cli.ROOT, "configs",
                                                                               "*.py")))


def _main(tmp_path, config, *flags):
  workdir = str(tmp_path / "run")
  proc = cli.run_main(config, workdir, *flags, timeout=120)
  return proc, workdir


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_an_argument_the_config_file_does_not_take_lists_the_known_ones(tmp_path, name):
  proc, workdir = _main(tmp_path, f"configs/{name}.py:smoek")
  error = one_error(proc)
  assert error.startswith(f"error: --config=configs/{name}.py:smoek: configs/{name}.py takes no "
                          "argument 'smoek'; it takes "), error
  assert "'smoke'" in error
  assert not os.path.exists(workdir)


CONFIG_FILE_FAULTS = {
    "missing": (None, "the config file does not exist"),
    "syntax_error": ("def get_config(:\n", "the config file does not parse: invalid syntax at "
                     "line 1."),
    "get_config_raises": ("def get_config():\n  raise RuntimeError('no such recipe')\n",
                          "loading it raised RuntimeError: no such recipe"),
    "get_config_raises_value_error": ("def get_config():\n  return int('x')\n",
                                      "loading it raised ValueError: invalid literal"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_FILE_FAULTS))
def test_config_files_that_do_not_load(tmp_path, case):
  text, words = CONFIG_FILE_FAULTS[case]
  path = str(tmp_path / "my_config.py")
  if text is not None:
    with open(path, "w") as f:
      f.write(text)
  proc, workdir = _main(tmp_path, path)
  error = one_error(proc)
  assert error.startswith(f"error: --config={path}: {words}"), error
  assert not os.path.exists(workdir)


@pytest.mark.parametrize("flag,words", [
    ("--config.learning_rate=nan", "config.learning_rate: must be a finite number, got nan."),
    ("--config.beta=inf", "config.beta: must be a finite number, got inf."),
    ("--config.seed=-1", "config.seed: must be an integer from 0 to 4294967295, got -1."),
    ("--config.seed=4294967296", "config.seed: must be an integer from 0 to 4294967295"),
    ("--workdir=", "--workdir is empty"),
])
def test_bad_values_stop_before_anything_is_written(tmp_path, flag, words):
  workdir = str(tmp_path / "run")
  # Run from tmp_path, so that a default workdir (runs/<name>) would show up there.
  args = cli.main_args(os.path.join(cli.ROOT, "configs", "mnist.py:smoke"), workdir)
  if flag.startswith("--workdir"):
    args[args.index(f"--workdir={workdir}")] = flag
  else:
    args.append(flag)
  proc = subprocess.run(args, cwd=str(tmp_path), env=cli.env(), capture_output=True, text=True,
                        timeout=120)
  error = one_error(proc)
  assert words in error, error
  assert not os.path.exists(workdir)
  assert not os.path.exists(tmp_path / "runs")  # No default workdir either.


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_every_float_field_of_every_config_refuses_nan_and_inf(name):
  config = load_config(name, "smoke")
  floats = [f for f, _ in checks._floats(config)]  # pylint: disable=protected-access
  assert "learning_rate" in floats and "beta" in floats
  for field in floats:
    for bad in (math.nan, math.inf, -math.inf):
      broken = load_config(name, "smoke")
      parent = broken
      *path, last = field.split(".")
      for part in path:
        parent = parent[part]
      if not isinstance(parent[last], float):
        continue  # An entry of a list of floats: covered through the list's own field.
      parent[last] = bad
      with pytest.raises(ConfigError, match=rf"^config\.{field}: must be a finite number"):
        checks.validate(broken)


@pytest.mark.parametrize("tool,flags,words", [
    ("generate", ["--what=manifold", "--grid=100000"], "--grid must be from 1 to 100, got 100000."),
    ("generate", ["--what=scatter", "--max_examples=0"],
     "--max_examples must be at least 1 (or -1), got 0"),
    ("evaluate", ["--max_examples=0"], "--max_examples must be at least 1 (or -1), got 0"),
    ("export", ["--out=x", "--step=-1"], "--step must be at least 0, got -1."),
])
def test_tool_flags_out_of_range(tmp_path, tool, flags, words):
  # The check comes before the workdir is even looked at.
  error = one_error(run_tool(tool, f"--workdir={tmp_path / 'missing'}", *flags))
  assert words in error, error


@pytest.mark.parametrize("field,value,words", [
    ("num", -1, "--num must be from 1 to 10000 (or 0)"),
    ("seed", -5, "--seed must be from 0 to"),
    ("temperature", math.nan, "--temperature must be from 0.0 to 1000.0, got nan"),
    ("quantiles", (0.0, 1.5), "--quantiles must be from 0.0 to 1.0, got 1.5"),
    ("steps", 1_000_000, "--steps must be from 2 to 1000"),
    ("zoom", 0, "--zoom must be from 1 to 32, got 0"),
    ("frame_ms", 0, "--frame_ms must be from 10 to 60000"),
    ("dpi", 100_000, "--dpi must be from 10 to 1000"),
    ("size_inches", -1.0, "--size_inches must be from 0.5 to 100.0"),
    ("indices", (3, -1), "--indices must be at least 0, got -1"),
    ("alphas", (1.0, math.inf), "--alphas must be from -1000.0 to 1000.0, got inf"),
])
def test_every_generate_option_is_range_checked(field, value, words):
  with pytest.raises(UsageError) as raised:
    generate.check_options(drawings.Options(**{field: value}))
  assert words in str(raised.value)


def test_multiworker_names_a_busy_port_at_once(tmp_path):
  with socket.socket() as busy:
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    with socket.socket() as probe:
      probe.bind(("127.0.0.1", 0))
      free = probe.getsockname()[1]
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, os.path.join(cli.ROOT, "launch", "multiworker.py"),
         f"--hosts=localhost:{free},localhost:{port}", "--config=configs/mnist.py:smoke",
         f"--workdir={tmp_path / 'run'}"], cwd=cli.ROOT, env=cli.env(), capture_output=True,
        text=True, timeout=60)
    elapsed = time.time() - t0
  assert proc.returncode == 2
  assert (f"multiworker.py: error: port {port} of worker 1 (localhost:{port}) cannot be used on "
          "this machine: Address already in use.") in proc.stderr
  assert elapsed < 20  # Not the cluster timeout: no worker was started.
  assert not os.path.exists(tmp_path / "run")


def test_an_image_size_the_host_cannot_hold_is_refused_before_anything_is_written(tmp_path):
  # Cartoon's five stride-2 blocks at 8192x8192: hundreds of GiB of activations per batch. The
  # data is not even looked for: the estimate comes first.
  proc, workdir = _main(tmp_path, "configs/cartoon.py:smoke", "--config.image_size=8192",
                        "--config.batch_size=64")
  error = one_error(proc)
  assert error.startswith("error: config.image_size: training 8192x8192x3 images in batches of "
                          "64 per host needs at least "), error
  assert "GiB available; use a smaller image_size or batch_size." in error
  assert not os.path.exists(workdir)

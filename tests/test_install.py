"""The wheel: built offline, installed into a fresh venv, its console scripts run from elsewhere.

The wheel is built from a copy of the sources (setup.py, setup.cfg, README.md, vae_dist/,
configs/), so the build leaves nothing in the checkout. The fresh venv reaches TensorFlow and the
other requirements through a .pth line naming the test venv's site-packages (no network, no
second copy of TensorFlow); that line does not run the test venv's own .pth files, so the
editable install of the checkout stays out of it and `vae_dist` is the wheel's.
"""
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig

import pytest

import cli
import trained_run_fixture

SOURCES = ("setup.py", "setup.cfg", "README.md", "vae_dist", "configs")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
  root = tmp_path_factory.mktemp("install")
  src = root / "src"
  src.mkdir()
  for name in SOURCES:
    path = os.path.join(cli.ROOT, name)
    if os.path.isdir(path):
      shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    else:
      shutil.copy(path, src / name)
  subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                  "--no-index", "-q", "-w", str(root / "dist"), str(src)], check=True,
                 capture_output=True, timeout=300)
  [wheel] = os.listdir(root / "dist")
  venv = root / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                 timeout=120)
  python = str(venv / "bin" / "python")
  subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps",
                  "--no-index", "-q", str(root / "dist" / wheel)], check=True,
                 capture_output=True, timeout=300)
  purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                            "['purelib'])"], capture_output=True, text=True, check=True).stdout
  ours = [p for p in site.getsitepackages() if os.path.isdir(p)] or [
      sysconfig.get_paths()["purelib"]]
  with open(os.path.join(purelib.strip(), "zz_test_requirements.pth"), "w") as f:
    f.write("\n".join(ours) + "\n")
  return {"bin": str(venv / "bin"), "python": python, "wheel": str(root / "dist" / wheel)}


def _env():
  env = cli.env()
  env.pop("PYTHONPATH")  # The wheel's vae_dist, not the checkout's.
  return env


def test_wheel_holds_the_configs_and_every_console_script(installed):
  import zipfile  # pylint: disable=g-import-not-at-top
  with zipfile.ZipFile(installed["wheel"]) as z:
    names = z.namelist()
    entry_points = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
  for config in ("mnist", "fashion_mnist", "cartoon", "default"):
    assert f"vae_dist/configs/{config}.py" in names
  for script in ("train", "generate", "evaluate", "export"):
    assert f"vae-dist-{script} = " in entry_points
    assert os.path.exists(os.path.join(installed["bin"], f"vae-dist-{script}"))


def test_console_scripts_run_a_shipped_config_from_another_directory(installed, tmp_path,
                                                                     tmp_path_factory):
  shared = trained_run_fixture.shared_run(tmp_path_factory)
  where = subprocess.run([installed["python"], "-c", "import vae_dist; print(vae_dist.__file__)"],
                         cwd=str(tmp_path), env=_env(), capture_output=True, text=True, check=True)
  assert where.stdout.startswith(os.path.dirname(installed["bin"])), where.stdout
  workdir = str(tmp_path / "run")
  data = cli.data_flags(shared["idx_dir"], shared["data_dir"])
  train = subprocess.run(
      [os.path.join(installed["bin"], "vae-dist-train"), "--config=mnist:smoke",
       f"--workdir={workdir}", "--config.dataset=fashion_mnist", *data],
      cwd=str(tmp_path), env=_env(), capture_output=True, text=True, timeout=300)
  assert train.returncode == 0, train.stderr[-3000:]
  assert "Run finished" in train.stdout
  with open(os.path.join(workdir, "run_info.json")) as f:
    [start] = json.load(f)["starts"]
  assert "git_commit" not in start  # An installed wheel is no checkout.

  out = str(tmp_path / "samples.png")
  tools = {
      "generate": ["--what=samples", f"--out={out}", "--num=4"],
      "evaluate": ["--num_samples=2"],
      "export": [f"--out={tmp_path / 'export'}"],
  }
  procs = {tool: subprocess.Popen(
      [os.path.join(installed["bin"], f"vae-dist-{tool}"), f"--workdir={workdir}", *flags],
      cwd=str(tmp_path), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for tool, flags in tools.items()}
  for tool, proc in procs.items():
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, (tool, err[-3000:])
  assert os.path.exists(out) and os.path.isdir(tmp_path / "export")
  assert os.listdir(os.path.join(workdir, "evaluations"))

  broken = tmp_path / "broken.py"
  broken.write_text("def get_config(:\n")
  for value, words in ((str(broken), "the config file does not parse"),
                       ("no_such_config", "no shipped config of that name")):
    proc = subprocess.run([os.path.join(installed["bin"], "vae-dist-train"), f"--config={value}"],
                          cwd=str(tmp_path), env=_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert words in cli.one_error(proc), proc.stderr

"""Resuming a damaged or changed run: never silently wrong, nothing committed lost.

* A config that changes what the run trains is refused before anything is written; harmless
  changes and changes accepted with --accept_config_changes go on and are recorded.
* A damaged latest checkpoint (truncated, a flipped byte, no index, an empty step directory) is
  set aside, never deleted, and training and the tools use the newest intact step.
* Files of the wrong kind in the workdir, and a config.json of the wrong types, are one line
  naming the file, in training and in the tools.
* A truncated shard of the prepared data is named with how to prepare it again.
"""
import json
import os
import shutil

import pytest

import cli
from faults_helpers import copy_run, files, one_error, run_tool, steps
import trained_run_fixture


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
  return trained_run_fixture.shared_run(tmp_path_factory)


def _resume(shared, workdir, *extra, **kwargs):
  """The command that trained the shared run (60 steps), on `workdir`, with `extra` flags."""
  return cli.run_main("configs/mnist.py:smoke", workdir, *trained_run_fixture.TRAIN_FLAGS,
                      *cli.data_flags(shared["idx_dir"], shared["data_dir"]), *extra, **kwargs)


def _metric_steps(workdir):
  return [m["step"] for m in cli.read_metrics(workdir) if "train/loss" in m]


# ---- changed configs ----------------------------------------------------------------------------


def test_changes_that_alter_the_run_are_refused_before_anything_is_written(shared, tmp_path):
  workdir = copy_run(shared["workdir"], tmp_path / "run")
  before = files(workdir)
  proc = _resume(shared, workdir, "--config.learning_rate=0.01", "--config.batch_size=16",
                 "--config.likelihood=gaussian", "--config.num_train_steps=80")
  error = one_error(proc)
  assert error.startswith(f"error: the config differs from the one the run in {workdir} started "
                          "with in fields that change what it trains: batch_size 8 -> 16, "
                          "learning_rate 0.003 -> 0.01, likelihood 'bernoulli' -> 'gaussian'. "
                          "Nothing was written."), error
  assert "another --workdir" in error and "--accept_config_changes" in error
  assert "num_train_steps" not in error  # Harmless: not a reason to refuse.
  assert "Training from step" not in proc.stderr
  assert files(workdir) == before


def test_harmless_changes_go_on_and_are_recorded(shared, tmp_path):
  workdir = copy_run(shared["workdir"], tmp_path / "run")
  # A line of metrics.jsonl damaged (not even UTF-8) is dropped, as a line cut short is.
  with open(os.path.join(workdir, "metrics.jsonl"), "ab") as f:
    f.write(b'{"step": 7\xff\x00garbage\n')
  proc = _resume(shared, workdir, "--config.num_train_steps=80", "--config.log_every_steps=40",
                 timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Config changed since the run" in proc.stderr
  assert steps(workdir)[-1] == 80
  with open(os.path.join(workdir, "config_history.jsonl")) as f:
    history = [json.loads(line) for line in f]
  assert len(history) == 1 and history[0]["step"] == 60 and not history[0]["accepted"]
  assert {c["field"]: (c["before"], c["now"]) for c in history[0]["changes"]} == {
      "num_train_steps": (60, 80), "log_every_steps": (20, 40)}
  assert _metric_steps(workdir) == [20, 40, 60, 80]


def test_accepted_changes_go_on_and_are_recorded(shared, tmp_path):
  workdir = copy_run(shared["workdir"], tmp_path / "run")
  proc = _resume(shared, workdir, "--config.num_train_steps=80", "--config.learning_rate=0.001",
                 "--accept_config_changes", timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["learning_rate"] == 0.001
  with open(os.path.join(workdir, "config_history.jsonl")) as f:
    (entry,) = [json.loads(line) for line in f]
  assert entry["accepted"] and entry["step"] == 60
  assert {"field": "learning_rate", "before": 0.003, "now": 0.001} in entry["changes"]


# ---- damaged checkpoints -----------------------------------------------------------------------


def _truncate(step_dir):
  data = [n for n in os.listdir(os.path.join(step_dir, "state")) if ".data-" in n][0]
  os.truncate(os.path.join(step_dir, "state", data), 1000)


def _flip_byte(step_dir):
  data = [n for n in os.listdir(os.path.join(step_dir, "state")) if ".data-" in n][0]
  path = os.path.join(step_dir, "state", data)
  with open(path, "r+b") as f:
    size = f.seek(0, 2)
    f.seek(size // 2)
    byte = f.read(1)
    f.seek(size // 2)
    f.write(bytes([byte[0] ^ 0xFF]))


def _remove_index(step_dir):
  os.remove(os.path.join(step_dir, "state", "ckpt.index"))


def _empty(step_dir):
  shutil.rmtree(step_dir)
  os.mkdir(step_dir)


# Two damages per run, the newer step and the one before: the run resumes from the step before
# both (20), each damaged step is set aside, and two runs cover the four kinds of damage.
DAMAGE = {
    "truncated_and_flipped_byte": {60: _truncate, 40: _flip_byte},
    "empty_step_dir_and_no_index": {60: _empty, 40: _remove_index},
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_latest_checkpoints_are_set_aside_and_the_run_resumes(shared, tmp_path, case):
  workdir = copy_run(shared["workdir"], tmp_path / "run")
  root = os.path.join(workdir, "checkpoints")
  damaged_files = {}
  for step, damage in DAMAGE[case].items():
    damage(os.path.join(root, str(step)))
    damaged_files[step] = files(os.path.join(root, str(step)))
  # The tools use the newest step that loads (never changing the run), and say which: step 40
  # when only 60 is unreadable, 20 when neither counts as committed.
  proc = run_tool("generate", f"--workdir={workdir}", "--what=samples",
                  f"--out={tmp_path / 'samples.png'}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  if case == "truncated_and_flipped_byte":
    assert f"checkpoint {root}/60/state/ckpt is damaged and cannot be read" in proc.stderr
    # The tools read only the model's tensors: 40 loads when the flipped byte is in an
    # optimizer slot, and is skipped like 60 when it is in a weight.
    assert ("samples at step 40." in proc.stdout or
            (f"{root}/40/state/ckpt is damaged" in proc.stderr and
             "samples at step 20." in proc.stdout)), proc.stdout + proc.stderr[-2000:]
  else:
    assert "samples at step 20." in proc.stdout
  assert sorted(os.listdir(root)) == ["20", "40", "60"]
  proc = _resume(shared, workdir, "--config.num_train_steps=80", timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr
  for step in DAMAGE[case]:
    assert f"set it aside as {root}/{step}.damaged" in proc.stderr
    # Set aside byte for byte, never deleted.
    assert files(os.path.join(root, f"{step}.damaged")) == damaged_files[step]
  assert f"Resumed from {root}/20." in proc.stderr
  # The run trained again from 20, and each step is logged once.
  assert steps(workdir) == [20, 40, 60, 80]
  assert _metric_steps(workdir) == [20, 40, 60, 80]


# ---- files of the wrong kind --------------------------------------------------------------------


def _make_dir(path):
  if os.path.exists(path):
    os.remove(path)
  os.mkdir(path)


def _make_file(path):
  shutil.rmtree(path)
  with open(path, "w") as f:
    f.write("not a directory")


def _write_config(workdir, **fields):
  path = os.path.join(workdir, "config.json")
  with open(path) as f:
    values = json.load(f)
  values.update(fields)
  with open(path, "w") as f:
    json.dump(values, f)


WRONG_KIND = {
    "config_json_a_directory": (lambda w: _make_dir(f"{w}/config.json"),
                                "{W}/config.json is a directory, where vae_dist keeps the run's "
                                "config (a file)"),
    "metrics_a_directory": (lambda w: _make_dir(f"{w}/metrics.jsonl"),
                            "{W}/metrics.jsonl is a directory"),
    "tensorboard_a_file": (lambda w: _make_file(f"{w}/tensorboard"),
                           "{W}/tensorboard is a file, where vae_dist keeps the run's "
                           "TensorBoard events (a directory)"),
    "lock_a_directory": (lambda w: _make_dir(f"{w}/lock"), "{W}/lock is a directory"),
    "config_json_wrong_types": (lambda w: _write_config(w, batch_size="32"),
                                "{W}/config.json does not hold a config of this version"),
    "config_json_not_json": (lambda w: open(f"{w}/config.json", "w").write("{'batch_size': 32"),
                             "{W}/config.json is not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(WRONG_KIND))
def test_files_of_the_wrong_kind_are_named(shared, tmp_path, case):
  workdir = copy_run(shared["workdir"], tmp_path / "run")
  make, words = WRONG_KIND[case]
  make(workdir)
  before = files(workdir)
  error = one_error(_resume(shared, workdir))
  assert words.format(W=workdir) in error, error
  assert files(workdir) == before
  if case.startswith("config_json") or case == "tensorboard_a_file":
    error = one_error(run_tool("generate", f"--workdir={workdir}", "--what=samples",
                               f"--out={tmp_path / 's.png'}"))
    assert f"{workdir}/" in error, error


# ---- damaged prepared data ----------------------------------------------------------------------


def test_truncated_data_shard_is_named_with_how_to_prepare_it_again(shared, tmp_path):
  data_dir = str(tmp_path / "tfds")
  shutil.copytree(shared["data_dir"], data_dir)
  version_dir = os.path.join(data_dir, "fashion_mnist", "3.0.1")
  shard = [n for n in sorted(os.listdir(version_dir)) if "train.tfrecord" in n][0]
  os.truncate(os.path.join(version_dir, shard), 500)
  workdir = str(tmp_path / "run")
  flags = [*trained_run_fixture.TRAIN_FLAGS, f"--config.manual_dir={shared['idx_dir']}",
           f"--config.data_dir={data_dir}"]
  error = one_error(cli.run_main("configs/mnist.py:smoke", workdir, *flags))
  assert error.startswith(f"error: the prepared data file {version_dir}/{shard} is damaged "
                          "(truncated record at"), error
  assert f"rm -r {version_dir}) and start the same command again" in error
  # A tool reading a damaged split says so too, in one line.
  test_shard = [n for n in sorted(os.listdir(version_dir)) if "test.tfrecord" in n][0]
  os.truncate(os.path.join(version_dir, test_shard), 300)
  error = one_error(run_tool("evaluate", f"--workdir={shared['workdir']}", "--num_samples=2",
                             f"--data_dir={data_dir}", f"--out={tmp_path / 'e.json'}"))
  assert error.startswith("error: a prepared data file is damaged (truncated record at"), error
  # Done as it says, the same command trains.
  shutil.rmtree(version_dir)
  proc = cli.run_main("configs/mnist.py:smoke", workdir, *flags, "--config.num_train_steps=20")
  assert proc.returncode == 0, proc.stderr[-3000:]

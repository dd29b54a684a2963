"""Checkpoint faults: a checkpoint of another model shape, and a disk that fills up while saving.

The disk-full runs limit the size of any one file with RLIMIT_FSIZE (no root, no tmpfs needed):
with SIGXFSZ ignored, a write past the limit fails with EFBIG, "File too large", as a full disk
fails with ENOSPC. The limit lets config.json, metrics and event files through but not the
checkpoint's data file.
"""
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
import tensorflow as tf

import cli
import datagen
from vae_dist import checkpointing
from vae_dist.errors import CheckpointError

BASE = ["--config.dataset=fashion_mnist", "--config.eval_num_examples=-1",
        "--config.deterministic=true"]
# configs/mnist.py:smoke (latent 2) trains 4 steps and commits step 4. Its checkpoint data file
# is ~845 kB; the largest other file a 4-step run writes, the train event file with the graph,
# is ~170 kB.
FILE_SIZE_LIMIT = 400_000


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """(data flags, workdir of a latent-2 run committed at step 4)."""
  root = tmp_path_factory.mktemp("faults")
  datagen.write_idx_dataset(root / "idx", num_train=96, num_test=20, seed=6)
  flags = cli.data_flags(str(root / "idx"), str(root / "tfds"))
  workdir = str(root / "latent2")
  proc = cli.run_main("configs/mnist.py:smoke", workdir, *BASE, *flags)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert _steps(workdir) == [4]
  return flags, workdir


def _steps(workdir):
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())


def _files(directory):
  """Every file under `directory` with its content hash: what "unchanged" means."""
  found = {}
  for parent, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(parent, name)
      with open(path, "rb") as f:
        found[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
  return found


def _copy_run(source, workdir):
  """A new workdir holding `source`'s checkpoints and config, so each test may change its own."""
  shutil.copytree(os.path.join(source, "checkpoints"), os.path.join(workdir, "checkpoints"))
  shutil.copy(os.path.join(source, "config.json"), os.path.join(workdir, "config.json"))
  return workdir


def _error_lines(stderr):
  assert "Traceback" not in stderr, stderr[-3000:]
  lines = [line for line in stderr.splitlines() if line.startswith("error:")]
  assert len(lines) == 1, stderr[-3000:]
  return lines[0]


# ---- a checkpoint of another model shape ---------------------------------------------------------


def test_resume_with_another_latent_dim_names_the_variables_and_keeps_the_checkpoints(
    tmp_path, trained):
  flags, source = trained
  workdir = _copy_run(source, str(tmp_path / "run"))
  before = _files(os.path.join(workdir, "checkpoints"))
  # A new latent_dim changes what the run trains: refused before anything is read or written.
  proc = cli.run_main("configs/mnist.py:smoke", workdir, *BASE, *flags, "--config.latent_dim=4")
  assert proc.returncode == 1, proc.stderr[-3000:]
  error = _error_lines(proc.stderr)
  assert "change what it trains: latent_dim 2 -> 4. Nothing was written." in error
  # Accepting the change does not make the checkpoint fit: the variables are listed.
  proc = cli.run_main("configs/mnist.py:smoke", workdir, *BASE, *flags, "--config.latent_dim=4",
                      "--accept_config_changes")
  assert proc.returncode == 1, proc.stderr[-3000:]
  error = _error_lines(proc.stderr)
  prefix = os.path.join(workdir, "checkpoints", "4", "state", "ckpt")
  assert f"Cannot restore checkpoint {prefix}: it holds a model of other shapes" in error
  # The encoder's last dense layer gives mean and log-variance: 2 * latent_dim outputs.
  assert ("encoder/dense/kernel [2304, 4] in the checkpoint vs [2304, 8] in the model "
          "(key optimizer/_trainable_variables/4)") in error
  assert "decoder/dense_1/kernel [2, 1568] in the checkpoint vs [4, 1568] in the model" in error
  # Kernels, biases and their Adam slots: 9 variables, 5 listed.
  assert "9 variable(s) differ in shape" in error and "; and 4 more." in error
  assert "start a new --workdir" in error and "set the config back" in error
  # The run's config.json (left as the run wrote it) says which field changed.
  assert error.endswith("Config fields changed since the run that wrote it: latent_dim 2 -> 4.")
  assert _files(os.path.join(workdir, "checkpoints")) == before
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["latent_dim"] == 2


def test_restore_from_a_run_of_another_shape_says_weights_only_does_not_help(tmp_path, trained):
  flags, source = trained
  workdir = str(tmp_path / "new_run")
  proc = cli.run_main("configs/mnist.py:smoke", workdir, *BASE, *flags, "--config.latent_dim=4",
                      f"--config.restore_from={source}", "--config.restore_weights_only=true")
  assert proc.returncode == 1, proc.stderr[-3000:]
  error = _error_lines(proc.stderr)
  prefix = os.path.join(source, "checkpoints", "4", "state", "ckpt")
  assert f"Cannot restore checkpoint {prefix}" in error
  # Weights only: the model's three changed variables, no optimizer slots.
  assert "3 variable(s) differ in shape" in error and "adam/" not in error
  assert "encoder/dense/kernel [2304, 4] in the checkpoint vs [2304, 8] in the model" in error
  assert "config.restore_from must be a checkpoint of the same model" in error
  assert "restore_weights_only does not help when shapes differ" in error
  assert _steps(workdir) == []


def test_restore_checkpoint_lists_missing_and_extra_variables(tmp_path):
  prefix = str(tmp_path / "ckpt")
  module = tf.Module()
  module.a = tf.Variable(tf.zeros([2, 3]))
  module.old = tf.Variable(tf.zeros([1]))
  tf.train.Checkpoint(net=module).write(prefix)
  changed = tf.Module()
  changed.a = tf.Variable(tf.zeros([2, 4]))
  changed.new = tf.Variable(tf.zeros([5]))
  with pytest.raises(CheckpointError) as raised:
    checkpointing.restore_checkpoint(prefix, tf.train.Checkpoint(net=changed),
                                     advice="Do this.")
  message = str(raised.value)
  assert ("1 variable(s) differ in shape: net/a [2, 3] in the checkpoint vs [2, 4] in the model "
          "(key net/a).") in message
  assert "1 variable(s) of the model are not in the checkpoint: net/new." in message
  assert "1 value(s) in the checkpoint are not in the model: net/old." in message
  assert message.endswith("Do this.")


# ---- a disk that fills up while saving -----------------------------------------------------------


def _limit_file_size():
  # Ignored (not default) SIGXFSZ survives exec: writes past the limit fail with EFBIG.
  signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
  resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


def test_disk_full_while_saving_stops_with_a_message_and_a_restart_resumes(tmp_path, trained):
  flags, source = trained
  data_file = os.path.join(source, "checkpoints", "4", "state", "ckpt.data-00000-of-00001")
  assert os.path.getsize(data_file) > FILE_SIZE_LIMIT  # Else the save below would succeed.
  workdir = _copy_run(source, str(tmp_path / "run"))
  root = os.path.join(workdir, "checkpoints")
  committed = _files(os.path.join(root, "4"))
  args = cli.main_args("configs/mnist.py:smoke", workdir, *BASE, *flags,
                       "--config.num_train_steps=8")
  proc = subprocess.run(args, cwd=cli.ROOT, env=cli.env(), capture_output=True, text=True,
                        timeout=300, preexec_fn=_limit_file_size)
  assert proc.returncode == 1, proc.stderr[-3000:]
  error = _error_lines(proc.stderr)
  assert error == (
      f"error: Could not save checkpoint step 8 in {root}: File too large. Committed "
      "checkpoints are unchanged: the latest is step 4, where the run resumes when started "
      "again. Free some space there (or raise the disk quota or file size limit) and start the "
      "run again.")
  assert sorted(os.listdir(root)) == ["4"]  # No temporary directory of step 8 left behind.
  assert _files(os.path.join(root, "4")) == committed

  proc = cli.run_main("configs/mnist.py:smoke", workdir, *BASE, *flags,
                      "--config.num_train_steps=8")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"Resumed from {os.path.join(root, '4')}" in proc.stderr
  assert _steps(workdir) == [4, 8]


_METADATA_TOO_LARGE = textwrap.dedent("""
    import resource, signal, sys
    import tensorflow as tf
    from vae_dist import checkpointing

    ckpt = tf.train.Checkpoint(v=tf.Variable(tf.zeros([1000])))
    manager = checkpointing.CheckpointManager(directory=sys.argv[1])
    manager.save(1, ckpt)
    manager.wait_until_finished()
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
    # The state (4 kB) fits; the metadata, written after it, does not.
    manager.save(2, ckpt, {"notes": "x" * 200_000})
    try:
      manager.wait_until_finished()
    except checkpointing.CheckpointError as e:
      print(e)
""")


def test_metadata_write_failure_leaves_no_step_behind(tmp_path):
  root = str(tmp_path / "checkpoints")
  proc = subprocess.run([sys.executable, "-c", _METADATA_TOO_LARGE, root], cwd=cli.ROOT,
                        env=cli.env(), capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.startswith(f"Could not save checkpoint step 2 in {root}: File too large. "
                                "Committed checkpoints are unchanged: the latest is step 1")
  assert os.listdir(root) == ["1"]


def test_no_space_left_on_device_is_named_and_the_step_is_removed(tmp_path):

  class FullDisk:

    def write(self, prefix):
      os.makedirs(os.path.dirname(prefix), exist_ok=True)
      with open(prefix + ".index", "wb") as f:
        f.write(b"half")
      raise tf.errors.ResourceExhaustedError(
          None, None, "{{function_node __wrapped__SaveV2_dtypes_2_device_/job:localhost/"
          "replica:0/task:0/device:CPU:0}} " + prefix + "_temp/part-00000; No space left on "
          "device [Op:SaveV2]")

  root = str(tmp_path / "checkpoints")
  manager = checkpointing.CheckpointManager(directory=root, async_save=False)
  with pytest.raises(CheckpointError) as raised:
    # pylint: disable-next=protected-access
    manager._write_step(3, manager._new_record(3, 0.0, None), FullDisk())
  assert str(raised.value) == (
      f"Could not save checkpoint step 3 in {root}: No space left on device. No checkpoint of "
      "this run was committed before, so a restart begins anew. Free some space there (or raise "
      "the disk quota or file size limit) and start the run again.")
  assert os.listdir(root) == []  # The step's temporary directory went with the failure.

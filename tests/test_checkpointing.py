"""Tests of vae_dist.checkpointing against real TensorFlow checkpoints and filesystems.

Covers the on-disk layout and metadata, snapshots taken at save() time while training goes on,
retention, the commit-marker protocol of filesystems without atomic rename (on TF's ram://),
clean-up after interrupted saves (including a SIGKILLed writer), error propagation from the
background thread, `restore_from` resolution and restores across tf.distribute strategies.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import numpy as np
import pytest
import tensorflow as tf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

from vae_dist import checkpointing  # noqa: E402
from vae_dist.errors import ConfigError  # noqa: E402
from vae_dist.errors import WorkdirError  # noqa: E402

keras = tf.keras

# The strategy tests need two logical CPUs. conftest.py normally splits the CPU already; when
# this file runs first, split it here (impossible once TF has initialised its devices).
# (Listing logical devices would initialise them, so look at the configuration instead.)
_CPU = tf.config.list_physical_devices("CPU")[0]
if len(tf.config.get_logical_device_configuration(_CPU) or []) < 2:
  try:
    tf.config.set_logical_device_configuration(_CPU, [tf.config.LogicalDeviceConfiguration()] * 2)
  except RuntimeError:
    pass  # Already initialised: test_restore_across_strategies uses a subprocess.


def _subprocess_env():
  env = dict(os.environ)
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  env["TF_CPP_MIN_LOG_LEVEL"] = "2"
  return env


def _vector_state(value=0.0, size=4):
  """A minimal train state: one vector and a step counter."""
  v = tf.Variable(tf.fill([size], float(value)))
  step = tf.Variable(0, dtype=tf.int64)
  return tf.train.Checkpoint(v=v, step=step), v, step


def _keras_state():
  """A small conv model with BatchNorm and a built Adam, as the VAE's train state has."""
  model = keras.Sequential([
      keras.Input((8, 8, 1)),
      keras.layers.Conv2D(4, 3, strides=2, padding="same"),
      keras.layers.BatchNormalization(),
      keras.layers.LeakyReLU(),
      keras.layers.Flatten(),
      keras.layers.Dense(6),
  ])
  optimizer = keras.optimizers.Adam(1e-2)
  optimizer.build(model.trainable_variables)
  step = tf.Variable(0, dtype=tf.int64)
  return model, optimizer, step


def _train_fn(model, optimizer, step):
  images = tf.random.stateless_uniform((4, 8, 8, 1), seed=(1, 2))

  @tf.function
  def train():
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(model(images, training=True) ** 2)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    step.assign_add(1)

  return train


def _values(model, optimizer, step):
  return ([v.numpy().copy() for v in model.weights] +
          [v.numpy().copy() for v in optimizer.variables] + [step.numpy()])


def _assert_values_equal(actual, expected):
  assert len(actual) == len(expected)
  for a, e in zip(actual, expected):
    np.testing.assert_array_equal(a, e)


# ---- layout and metadata -------------------------------------------------------------------------


@pytest.mark.parametrize("async_save", [True, False])
def test_layout_and_metadata(tmp_path, async_save):
  root = str(tmp_path / "checkpoints")
  ckpt, v, step = _vector_state()
  manager = checkpointing.CheckpointManager(directory=root, max_to_keep=5, async_save=async_save)
  assert manager.latest_step() is None and manager.all_steps() == []
  for s in (10, 20, 30):
    v.assign(tf.fill([4], float(s)))
    step.assign(s)
    assert manager.save(s, ckpt, {"metrics": {"eval/elbo": np.float32(-100.0 + s)},
                                  "num_replicas": 2, "config_hash": "abc"})
  manager.wait_until_finished()
  # The same step again is skipped, not overwritten.
  assert not manager.save(30, ckpt)

  assert sorted(os.listdir(root)) == ["10", "20", "30"]
  assert manager.all_steps() == [10, 20, 30] and manager.latest_step() == 30
  for s in (10, 20, 30):
    step_dir = manager.step_dir(s)
    assert step_dir == os.path.join(root, str(s))
    files = sorted(os.listdir(step_dir))
    # Rename is the commit on local disk: no marker file.
    assert files == [checkpointing.METADATA_FILENAME, checkpointing.STATE_SUBDIR]
    state_files = sorted(os.listdir(os.path.join(step_dir, "state")))
    assert state_files == ["ckpt.data-00000-of-00001", "ckpt.index"]
    with open(os.path.join(step_dir, checkpointing.METADATA_FILENAME)) as f:
      on_disk = json.load(f)
    meta = manager.metadata(s)
    assert meta == on_disk
    assert meta["step"] == s
    assert meta["start_timestamp"] <= meta["commit_timestamp"] <= time.time()
    assert meta["metrics"] == {"eval/elbo": -100.0 + s}
    assert meta["num_replicas"] == 2 and meta["config_hash"] == "abc"
    reader = tf.train.load_checkpoint(manager.state_prefix(s))
    np.testing.assert_array_equal(reader.get_tensor("v/.ATTRIBUTES/VARIABLE_VALUE"), [s] * 4)
  assert (manager.metadata(10)["commit_timestamp"] <= manager.metadata(20)["start_timestamp"])

  fresh, fresh_v, fresh_step = _vector_state()
  manager.restore(20, fresh).assert_consumed()
  np.testing.assert_array_equal(fresh_v.numpy(), [20.0] * 4)
  assert fresh_step.numpy() == 20
  # Bad metadata fails in the caller, before anything is written.
  with pytest.raises(ValueError, match="start_timestamp"):
    manager.save(40, ckpt, {"start_timestamp": 0})
  with pytest.raises(ValueError, match="JSON"):
    manager.save(40, ckpt, {"metrics": {"eval/elbo": object()}})
  manager.close()
  with pytest.raises(RuntimeError):
    manager.save(40, ckpt)
  assert manager.all_steps() == [10, 20, 30]


def test_bad_retention_settings_are_config_errors(tmp_path):
  with pytest.raises(ConfigError, match="max_to_keep"):
    checkpointing.CheckpointManager(directory=str(tmp_path), max_to_keep=0)
  with pytest.raises(ConfigError, match="keep_best"):
    checkpointing.CheckpointManager(directory=str(tmp_path), keep_best=-1)
  with pytest.raises(ConfigError, match="keep_every_steps"):
    checkpointing.CheckpointManager(directory=str(tmp_path), keep_every_steps=-5)


# ---- asynchronous saves --------------------------------------------------------------------------


def test_async_save_snapshots_values_at_save_time(tmp_path):
  model, optimizer, step = _keras_state()
  # A large extra variable keeps the background write busy while the loop changes everything.
  big = tf.Variable(tf.zeros([4_000_000]))
  ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step, big=big)
  train = _train_fn(model, optimizer, step)
  manager = checkpointing.CheckpointManager(directory=str(tmp_path / "checkpoints"),
                                            max_to_keep=None)

  expected = {}
  for save_step in (1, 2, 3):  # Several saves: a snapshot must stay right after the first.
    train()
    big.assign(tf.fill([4_000_000], float(save_step)))
    expected[save_step] = _values(model, optimizer, step)
    manager.save(save_step, ckpt)
    # Change every variable at once, while the write is still going on.
    for _ in range(3):
      train()
    for var in model.weights:
      var.assign(var + 100.0)
    step.assign(-1)
    big.assign(tf.fill([4_000_000], -1.0))
  manager.wait_until_finished()

  for save_step, values in expected.items():
    model2, optimizer2, step2 = _keras_state()
    big2 = tf.Variable(tf.zeros([4_000_000]))
    ckpt2 = tf.train.Checkpoint(model=model2, optimizer=optimizer2, step=step2, big=big2)
    manager.restore(save_step, ckpt2).assert_consumed()
    _assert_values_equal(_values(model2, optimizer2, step2), values)
    np.testing.assert_array_equal(big2.numpy()[:3], [float(save_step)] * 3)

  # Same checkpoint keys as a plain synchronous tf.train.Checkpoint.write of the live state.
  direct = str(tmp_path / "direct" / "ckpt")
  ckpt.write(direct)
  snapshot_keys = tf.train.load_checkpoint(manager.state_prefix(3)).get_variable_to_shape_map()
  assert snapshot_keys == tf.train.load_checkpoint(direct).get_variable_to_shape_map()


def test_state_that_cannot_be_snapshotted_is_saved_synchronously(tmp_path, caplog):
  # A Checkpoint built with root= has the object graph of `root`, not its own: no snapshot.
  v = tf.Variable([1.0, 2.0])
  module = tf.Module()
  module.v = v
  ckpt = tf.train.Checkpoint(root=module)
  manager = checkpointing.CheckpointManager(directory=str(tmp_path / "checkpoints"))
  with caplog.at_level("WARNING"):
    manager.save(1, ckpt)
  assert "synchronously" in caplog.text
  v.assign([5.0, 6.0])
  manager.wait_until_finished()
  restored = tf.Module()
  restored.v = tf.Variable([0.0, 0.0])
  manager.restore(1, tf.train.Checkpoint(root=restored))
  np.testing.assert_array_equal(restored.v.numpy(), [1.0, 2.0])


@pytest.mark.parametrize("async_save", [True, False])
def test_write_error_is_raised_by_the_next_call(tmp_path, async_save):
  root = tmp_path / "checkpoints"
  ckpt, _, _ = _vector_state()
  manager = checkpointing.CheckpointManager(directory=str(root), async_save=async_save)
  manager.save(1, ckpt)
  manager.wait_until_finished()
  # Replace the directory by a file: the next write fails for real (the tests may run as root,
  # so permissions would not stop it).
  for name in os.listdir(root):
    tf.io.gfile.rmtree(str(root / name))
  os.rmdir(root)
  root.write_text("not a directory")
  if async_save:
    assert manager.save(2, ckpt)  # Returns: the write happens in the background...
    with pytest.raises(WorkdirError, match="step 2"):
      manager.wait_until_finished()  # ...and its error comes out of the next call,
    manager.wait_until_finished()  # once.
  else:
    with pytest.raises(WorkdirError, match="step 2"):
      manager.save(2, ckpt)


# ---- retention -----------------------------------------------------------------------------------


def test_retention_keeps_recent_periodic_and_best(tmp_path):
  root = str(tmp_path / "checkpoints")
  ckpt, v, _ = _vector_state()
  manager = checkpointing.CheckpointManager(
      directory=root, max_to_keep=2, keep_every_steps=5, keep_best=2, best_metric="eval/elbo")
  for s in range(1, 21):
    v.assign(tf.fill([4], float(s)))
    # ELBO peaks at steps 7 and 8 (equal): they beat every later step. Step 13 has no metric.
    metrics = {} if s == 13 else {"eval/elbo": -(s - 7.5) ** 2, "eval/recon": float(s)}
    manager.save(s, ckpt, {"metrics": metrics, "num_replicas": 1})
  manager.wait_until_finished()
  # Last two, multiples of 5, best two by ELBO; nothing else (no temporary or trash dirs).
  expected = [5, 7, 8, 10, 15, 19, 20]
  assert manager.all_steps() == expected
  assert sorted(os.listdir(root), key=int) == [str(s) for s in expected]
  for s in expected:
    fresh, fresh_v, _ = _vector_state()
    manager.restore(s, fresh)
    np.testing.assert_array_equal(fresh_v.numpy(), [float(s)] * 4)


def test_retention_never_deletes_the_newest_step(tmp_path):
  root = str(tmp_path / "checkpoints")
  ckpt, _, _ = _vector_state()
  # Every step worse than step 1, and max_to_keep=1: the newest must still survive.
  manager = checkpointing.CheckpointManager(directory=root, max_to_keep=1, keep_best=1)
  for s in range(1, 5):
    manager.save(s, ckpt, {"metrics": {"eval/elbo": -float(s)}})
  manager.wait_until_finished()
  assert manager.all_steps() == [1, 4]


# ---- filesystems without atomic rename -----------------------------------------------------------


def test_non_atomic_filesystem_uses_commit_marker(caplog):
  root = f"ram://ckpt-test-{uuid.uuid4().hex}/checkpoints"
  assert not checkpointing.is_atomic_rename_filesystem(root)
  assert checkpointing.is_atomic_rename_filesystem("/tmp/x")
  assert checkpointing.is_atomic_rename_filesystem("file:///tmp/x")
  assert not checkpointing.is_atomic_rename_filesystem("gs://bucket/x")

  ckpt, v, _ = _vector_state()
  manager = checkpointing.CheckpointManager(directory=root, max_to_keep=3)
  for s in (1, 2):
    v.assign(tf.fill([4], float(s)))
    manager.save(s, ckpt, {"metrics": {"eval/elbo": float(s)}})
  manager.wait_until_finished()
  assert sorted(n.rstrip("/") for n in tf.io.gfile.listdir(root)) == ["1", "2"]
  for s in (1, 2):
    step_dir = manager.step_dir(s)
    assert tf.io.gfile.exists(f"{step_dir}/{checkpointing.COMMIT_MARKER_FILENAME}")
    assert manager.metadata(s)["step"] == s
  assert manager.all_steps() == [1, 2]

  # An unmarked step: written completely except for the marker, as a killed save leaves it.
  unmarked = f"{root}/3"
  v.assign(tf.fill([4], 3.0))
  ckpt.write(f"{unmarked}/state/ckpt")
  with tf.io.gfile.GFile(f"{unmarked}/{checkpointing.METADATA_FILENAME}", "w") as f:
    f.write(json.dumps({"step": 3}))

  # Ignored by readers (a non-chief manager does not clean up)...
  reader = checkpointing.CheckpointManager(directory=root, is_chief=False)
  assert reader.all_steps() == [1, 2] and reader.latest_step() == 2
  with pytest.raises(ConfigError, match="never committed"):
    reader.resolve_restore_from(unmarked)
  with pytest.raises(WorkdirError):
    reader.restore(3, ckpt)
  # ...and removed by the next chief, with a log line naming it.
  with caplog.at_level("WARNING"):
    manager2 = checkpointing.CheckpointManager(directory=root, max_to_keep=3)
  assert unmarked in caplog.text
  assert not tf.io.gfile.exists(unmarked)
  assert manager2.latest_step() == 2
  fresh, fresh_v, _ = _vector_state()
  manager2.restore(2, fresh).assert_consumed()
  np.testing.assert_array_equal(fresh_v.numpy(), [2.0] * 4)

  # Retention on a non-atomic filesystem: the marker goes first, then the files.
  for s in (4, 5, 6):
    manager2.save(s, ckpt)
  manager2.wait_until_finished()
  assert manager2.all_steps() == [4, 5, 6]
  assert sorted(n.rstrip("/") for n in tf.io.gfile.listdir(root)) == ["4", "5", "6"]
  tf.io.gfile.rmtree(root)


def test_non_chief_writes_nothing_under_root(tmp_path):
  root = str(tmp_path / "checkpoints")
  ckpt, _, _ = _vector_state()
  worker = checkpointing.CheckpointManager(directory=root, is_chief=False)
  for s in (1, 2):
    assert worker.save(s, ckpt)
  worker.wait_until_finished()
  assert not os.path.exists(root)
  assert worker.all_steps() == []


# ---- interrupted saves ---------------------------------------------------------------------------


def test_leftover_tmp_dir_is_removed_at_start(tmp_path, caplog):
  root = str(tmp_path / "checkpoints")
  ckpt, v, _ = _vector_state(value=1.0)
  manager = checkpointing.CheckpointManager(directory=root)
  manager.save(1, ckpt)
  manager.close()
  leftover = os.path.join(root, "2" + checkpointing.TMP_SUFFIX)
  os.makedirs(os.path.join(leftover, "state"))
  with open(os.path.join(leftover, "state", "ckpt_temp"), "wb") as f:
    f.write(b"half a checkpoint")
  assert manager.all_steps() == [1]  # Never listed, even before the clean-up.

  with caplog.at_level("WARNING"):
    manager = checkpointing.CheckpointManager(directory=root)
  assert leftover in caplog.text
  assert os.listdir(root) == ["1"]
  assert manager.latest_step() == 1
  v.assign(tf.zeros([4]))
  manager.restore(1, ckpt).assert_consumed()
  np.testing.assert_array_equal(v.numpy(), [1.0] * 4)


_KILLED_WRITER = textwrap.dedent("""
    import sys
    import tensorflow as tf
    from vae_dist import checkpointing

    small = tf.Variable(tf.fill([4], 1.0))
    big = tf.Variable(tf.zeros([32 * 1024 * 1024]))  # 128 MB: a write that takes a while.
    ckpt = tf.train.Checkpoint(small=small, big=big)
    manager = checkpointing.CheckpointManager(directory=sys.argv[1])
    manager.save(1, ckpt)
    manager.wait_until_finished()
    print("committed 1", flush=True)
    small.assign(tf.fill([4], 2.0))
    manager.save(2, ckpt)
    manager.wait_until_finished()
    print("committed 2", flush=True)
""")


def test_sigkill_during_write_keeps_previous_step(tmp_path):
  root = str(tmp_path / "checkpoints")
  tmp_dir = os.path.join(root, "2" + checkpointing.TMP_SUFFIX)
  with open(tmp_path / "stderr.txt", "w") as stderr:
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, root], cwd=REPO,
                            env=_subprocess_env(), stdout=subprocess.PIPE, stderr=stderr,
                            text=True)
  try:
    line = proc.stdout.readline()
    assert line.strip() == "committed 1", (tmp_path / "stderr.txt").read_text()[-3000:]
    deadline = time.monotonic() + 60
    while not os.path.exists(tmp_dir):
      assert proc.poll() is None, "the writer finished before it could be killed"
      assert time.monotonic() < deadline, "step 2's temporary directory never appeared"
      time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  assert proc.returncode == -signal.SIGKILL
  # Killed mid-write: step 2 exists only as its temporary directory.
  assert os.path.isdir(tmp_dir) and not os.path.exists(os.path.join(root, "2"))

  manager = checkpointing.CheckpointManager(directory=root)
  assert manager.latest_step() == 1
  assert not os.path.exists(tmp_dir)
  small = tf.Variable(tf.zeros([4]))
  manager.restore(1, tf.train.Checkpoint(small=small), expect_partial=True)
  np.testing.assert_array_equal(small.numpy(), [1.0] * 4)


# ---- restore_from --------------------------------------------------------------------------------


def test_resolve_restore_from(tmp_path):
  workdir = tmp_path / "other_run"
  root = str(workdir / "checkpoints")
  ckpt, v, _ = _vector_state()
  manager = checkpointing.CheckpointManager(directory=root)
  for s in (3, 6):
    v.assign(tf.fill([4], float(s)))
    manager.save(s, ckpt)
  manager.wait_until_finished()
  prefix3, prefix6 = manager.state_prefix(3), manager.state_prefix(6)

  assert manager.resolve_restore_from("3") == prefix3
  assert manager.resolve_restore_from(manager.step_dir(3)) == prefix3
  assert manager.resolve_restore_from(manager.step_dir(3) + "/") == prefix3
  assert manager.resolve_restore_from(prefix3) == prefix3
  assert manager.resolve_restore_from(root) == prefix6  # Newest step of a checkpoints dir.
  assert manager.resolve_restore_from(str(workdir)) == prefix6  # Or of a workdir.
  with pytest.raises(ConfigError, match="restore_from.*step 4"):
    manager.resolve_restore_from("4")
  with pytest.raises(ConfigError, match="restore_from"):
    manager.resolve_restore_from(str(tmp_path / "missing"))
  with pytest.raises(ConfigError, match="restore_from"):
    manager.resolve_restore_from("")
  unfinished = os.path.join(root, "9" + checkpointing.TMP_SUFFIX)
  ckpt.write(os.path.join(unfinished, "state", "ckpt"))
  with pytest.raises(ConfigError, match="unfinished"):
    manager.resolve_restore_from(unfinished)

  # Resolve and restore in one call, as a run starting from another run's checkpoint does;
  # weights only: a Checkpoint holding part of the state.
  v2 = tf.Variable(tf.zeros([4]))
  other = checkpointing.CheckpointManager(directory=str(tmp_path / "new_run" / "checkpoints"))
  assert other.restore_path(str(workdir), tf.train.Checkpoint(v=v2), expect_partial=True) == prefix6
  np.testing.assert_array_equal(v2.numpy(), [6.0] * 4)
  checkpointing.restore_checkpoint(prefix3, tf.train.Checkpoint(v=v2), expect_partial=True)
  np.testing.assert_array_equal(v2.numpy(), [3.0] * 4)
  # A state that does not fit (another model shape) is a user-facing error.
  with pytest.raises(WorkdirError, match="Cannot restore"):
    checkpointing.restore_checkpoint(prefix3, tf.train.Checkpoint(v=tf.Variable(tf.zeros([5]))))


# ---- tf.distribute -------------------------------------------------------------------------------


def _strategy_round_trip(root: str) -> None:
  """Saves without a strategy and restores under MirroredStrategy(2 CPUs), and the reverse."""
  mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

  # No strategy -> MirroredStrategy.
  model, optimizer, step = _keras_state()
  train = _train_fn(model, optimizer, step)
  train()
  expected = _values(model, optimizer, step)
  manager = checkpointing.CheckpointManager(directory=root, max_to_keep=None)
  manager.save(1, tf.train.Checkpoint(model=model, optimizer=optimizer, step=step))
  manager.wait_until_finished()
  with mirrored.scope():
    m_model, m_optimizer, m_step = _keras_state()
  m_ckpt = tf.train.Checkpoint(model=m_model, optimizer=m_optimizer, step=m_step)
  manager.restore(1, m_ckpt).assert_consumed()
  _assert_values_equal(_values(m_model, m_optimizer, m_step), expected)
  for var in m_model.weights:  # Every replica got the value, not just the primary.
    inner = var.value
    assert isinstance(inner, tf.distribute.DistributedValues)
    for component in mirrored.experimental_local_results(inner):
      np.testing.assert_array_equal(component.numpy(), var.numpy())

  # MirroredStrategy -> no strategy, saved asynchronously while the variables change.
  images = tf.random.stateless_uniform((4, 8, 8, 1), seed=(3, 4))

  @tf.function
  def m_train():
    def replica_step():
      with tf.GradientTape() as tape:
        loss = tf.reduce_mean(m_model(images, training=True) ** 2)
      grads = tape.gradient(loss, m_model.trainable_variables)
      m_optimizer.apply_gradients(zip(grads, m_model.trainable_variables))
    mirrored.run(replica_step)

  m_train()
  m_step.assign(7)
  expected = _values(m_model, m_optimizer, m_step)
  manager.save(2, m_ckpt)
  m_train()
  for var in m_model.weights:
    var.assign(var + 100.0)
  m_step.assign(-1)
  manager.wait_until_finished()
  model2, optimizer2, step2 = _keras_state()
  status = manager.restore(2, tf.train.Checkpoint(model=model2, optimizer=optimizer2, step=step2))
  status.assert_consumed()
  _assert_values_equal(_values(model2, optimizer2, step2), expected)


def test_restore_across_strategies(tmp_path):
  root = str(tmp_path / "checkpoints")
  if len(tf.config.list_logical_devices("CPU")) >= 2:
    _strategy_round_trip(root)
    return
  # TF was initialised with one CPU before this module could split it: use a fresh process.
  code = textwrap.dedent(f"""
      import importlib.util, sys
      import tensorflow as tf
      tf.config.set_logical_device_configuration(
          tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
      spec = importlib.util.spec_from_file_location("t", {os.path.abspath(__file__)!r})
      module = importlib.util.module_from_spec(spec)
      spec.loader.exec_module(module)
      module._strategy_round_trip({root!r})
  """)
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_subprocess_env(),
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-5000:]

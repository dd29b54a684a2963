"""config.shuffle='full': epochs as permutations of the part in memory, gathered a batch at a time.

On small generated Fashion-MNIST IDX data (random images, so every example is told apart by its
pixels), prepared once for the module: 36 train examples, so batches of 8 straddle epochs.
"""
import gzip
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import cli
import datagen
from conftest import load_config
from conftest import mirrored
from vae_dist.config import checks
from vae_dist.data import input_pipeline
from vae_dist.data import permuted_stream
from vae_dist.data import sources
from vae_dist.errors import ConfigError

NUM_TRAIN = 36


def _config(root, *, shuffle="full", binarize="none", batch_size=8):
  config = load_config("fashion_mnist", "smoke")
  config.manual_dir, config.data_dir = str(root / "idx"), str(root / "tfds")
  config.shuffle, config.binarize, config.batch_size = shuffle, binarize, batch_size
  config.cache = "memory"
  return config


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp("full")
  datagen.write_idx_dataset(root / "idx", num_train=NUM_TRAIN, num_test=4, seed=5)
  builder = sources.load_builder(_config(root))
  # The part in the order the pipeline reads it (TFDS' prepared order, not the IDX file's).
  images = np.stack([x["image"] for x in tfds.as_numpy(
      builder.as_dataset(split="train", shuffle_files=False))])
  assert images.shape == (NUM_TRAIN, 28, 28, 1)
  assert len({im.tobytes() for im in images}) == NUM_TRAIN  # Told apart by their pixels.
  return root, builder, images


def _stream(builder, config, n, *, start_step=0, pipelines=1, pipeline_id=0):
  ctx = tf.distribute.InputContext(num_input_pipelines=pipelines, input_pipeline_id=pipeline_id,
                                   num_replicas_in_sync=pipelines)
  it = iter(input_pipeline.train_dataset_fn(builder, config, start_step)(ctx))
  return [next(it)["image"].numpy() for _ in range(n)]


def _rows_of(batches, images):
  """The index in `images` of every example of `batches`, in stream order."""
  where = {im.tobytes(): i for i, im in enumerate(images)}
  return [where[im.tobytes()] for b in batches for im in b]


def test_every_example_once_per_epoch_and_epochs_differ(data):
  root, builder, images = data
  batches = _stream(builder, _config(root), 18)  # 144 positions: 4 epochs of 36.
  rows = _rows_of(batches, images)
  epochs = [rows[e * NUM_TRAIN:(e + 1) * NUM_TRAIN] for e in range(4)]
  for epoch in epochs:
    assert sorted(epoch) == list(range(NUM_TRAIN))
  # Batch 4 holds positions 32..39: the last 4 of epoch 0 and the first 4 of epoch 1.
  assert rows[32:40] == epochs[0][32:] + epochs[1][:4]
  assert len({tuple(e) for e in epochs}) == 4
  assert epochs[0] != list(range(NUM_TRAIN))  # Not the part's own order.
  # The rows are those of the documented function of (seed, pipeline, position).
  want = permuted_stream.permutation_rows(np.arange(144), count=NUM_TRAIN, seed=0,
                                          pipeline=0).numpy()
  assert rows == list(want)


def test_resumed_stream_repeats_the_uninterrupted_one_bitwise(data):
  root, builder, _ = data
  for binarize in ("none", "dynamic"):
    batches = _stream(builder, _config(root, binarize=binarize), 14)
    for step in (1, 4, 5, 9, 13):  # Inside an epoch, across (4: 32..39) and at (9: 72) its ends.
      resumed = _stream(builder, _config(root, binarize=binarize), 1, start_step=step)
      np.testing.assert_array_equal(resumed[0], batches[step])


def test_same_global_batches_on_one_and_two_replicas(data):
  root, builder, _ = data
  seen = {}
  for replicas in (1, 2):
    strategy = tf.distribute.get_strategy() if replicas == 1 else mirrored(2)
    config = _config(root, binarize="dynamic")
    it = iter(strategy.distribute_datasets_from_function(
        input_pipeline.train_dataset_fn(builder, config, start_step=3)))
    seen[replicas] = [np.concatenate([r.numpy() for r in strategy.experimental_local_results(
        next(it)["image"])]) for _ in range(4)]
  assert seen[1][0].shape == (8, 28, 28, 1) and set(np.unique(seen[1][0])) == {0, 1}
  for a, b in zip(seen[1], seen[2]):
    np.testing.assert_array_equal(a, b)


def test_two_pipelines_read_disjoint_parts_of_the_split(data):
  root, builder, images = data
  parts = []
  for pid in (0, 1):
    config = _config(root)
    config.batch_size = 2 * 6  # 6 per pipeline; each part holds 18: 3 batches an epoch.
    rows = _rows_of(_stream(builder, config, 6, pipelines=2, pipeline_id=pid), images)
    assert sorted(rows[:18]) == sorted(rows[18:])  # Each epoch is the whole part, once.
    assert rows[:18] != rows[18:]
    parts.append(set(rows[:18]))
  assert len(parts[0]) == len(parts[1]) == 18 and not parts[0] & parts[1]
  assert parts[0] | parts[1] == set(range(NUM_TRAIN))


def _write_same_image_idx(folder, count):
  """IDX files whose train images are all one image (test images are random)."""
  datagen.write_idx_dataset(folder, num_train=count, num_test=4, seed=8)
  image = np.random.default_rng(9).integers(0, 256, size=(28, 28), dtype=np.uint8)
  path = os.path.join(folder, datagen.IDX_FILES["train"][0] + ".gz")
  with open(path, "wb") as f:
    f.write(gzip.compress(datagen.idx_bytes(np.stack([image] * count), 0x803), mtime=0))


def test_dynamic_binarisation_is_that_of_the_buffer_stream_at_the_same_position(tmp_path):
  """Same image at every position: any difference would be the draws'."""
  _write_same_image_idx(tmp_path / "idx", NUM_TRAIN)
  builder = sources.load_builder(_config(tmp_path))
  for replicas in (1, 2):
    strategy = tf.distribute.get_strategy() if replicas == 1 else mirrored(2)
    streams = {}
    for shuffle in ("buffer", "full"):
      config = _config(tmp_path, shuffle=shuffle, binarize="dynamic")
      it = iter(strategy.distribute_datasets_from_function(
          input_pipeline.train_dataset_fn(builder, config, start_step=2)))
      streams[shuffle] = [np.concatenate([r.numpy() for r in strategy.experimental_local_results(
          next(it)["image"])]) for _ in range(6)]
    a, b = np.stack(streams["buffer"]), np.stack(streams["full"])
    assert 0.3 < a.mean() < 0.7 and not np.array_equal(a[0], a[1])  # Real draws, each its own.
    np.testing.assert_array_equal(a, b)


def test_full_with_a_cache_off_memory_is_one_config_error_naming_shuffle(data):
  root, builder, _ = data
  for cache in ("disk", "none"):
    config = _config(root)
    config.cache = cache
    with pytest.raises(ConfigError) as e:
      checks.validate(config)
    assert str(e.value).startswith("config.shuffle:") and "\n" not in str(e.value)
    assert "config.cache='memory'" in str(e.value)
  config = _config(root)
  config.shuffle = "random"
  with pytest.raises(ConfigError, match=r"^config\.shuffle: 'random' is not one of"):
    checks.validate(config)
  # 'auto' decides by the part's size, known once the data is: 2 parts of 18 x 784 bytes.
  config = _config(root)
  config.cache, config.cache_max_bytes = "auto", 18 * 784
  input_pipeline.check_shuffle(builder, config, num_pipelines=2)
  for check in (lambda: input_pipeline.check_shuffle(builder, config, num_pipelines=1),
                lambda: _stream(builder, config, 1)):
    with pytest.raises(ConfigError) as e:
      check()
    assert str(e.value).startswith("config.shuffle: 'full' holds") and "\n" not in str(e.value)
    assert "cache_max_bytes=14112" in str(e.value)


def test_the_held_part_is_no_constant_of_the_dataset_graph(data):
  """The images are made inside the pipeline, so serialising its graph (as tf.data's rewrites
  do, under protobuf's 2 GB limit) never carries them, whatever the part's size."""
  root, builder, images = data
  ds = input_pipeline.train_dataset_fn(builder, _config(root), 0)(tf.distribute.InputContext())
  next(iter(ds))
  graph = tf.raw_ops.DatasetToGraphV2(input_dataset=tf.data.experimental.to_variant(ds),
                                      external_state_policy=1).numpy()
  assert b"RandomIndexShuffle" in graph  # The graph of the 'full' stream, serialised.
  assert not [i for i, im in enumerate(images) if im.tobytes() in graph]
  # What the test would see if the part were an eager tensor given to from_tensors.
  held = tf.data.Dataset.from_tensors(tf.constant(images)).repeat()
  graph = tf.raw_ops.DatasetToGraphV2(input_dataset=tf.data.experimental.to_variant(held),
                                      external_state_policy=1).numpy()
  assert images[0].tobytes() in graph


def test_cli_trains_and_resumes_with_full_shuffle_as_one_run_would(data, tmp_path):
  """Also: the straight run reads one step per input element, the resumed runs the automatic
  steps_per_element (2 here), so equal weights also say k changes nothing a run trains on; and
  the second resumed run uses cache='device' (row numbers as input): nor does that."""
  root, _, _ = data
  args = [*cli.data_flags(root / "idx", root / "tfds"), "--config.shuffle=full",
          "--config.deterministic=true", "--config.eval_every_steps=4",
          "--config.checkpoint_every_steps=4", "--config.log_every_steps=2"]
  straight = str(tmp_path / "straight")
  proc = cli.run_main("configs/fashion_mnist.py:smoke", straight, *args,
                      "--config.num_train_steps=8", "--config.steps_per_element=1")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "shuffle=full; 1 step per element" in proc.stderr
  resumed = str(tmp_path / "resumed")
  for steps, cache in ((4, "memory"), (8, "device")):
    proc = cli.run_main("configs/fashion_mnist.py:smoke", resumed, *args,
                        f"--config.num_train_steps={steps}", f"--config.cache={cache}")
    assert proc.returncode == 0, proc.stderr[-3000:]
  # The second half gathered its batches from the device's copy of the images.
  assert "Resumed from" in proc.stderr and ("held by each replica's device (row numbers as "
                                            "input); shuffle=full; 2 steps per element"
                                            in proc.stderr)
  assert [r["step"] for r in cli.read_metrics(resumed) if "train/loss" in r] == [2, 4, 6, 8]
  for name in ("straight", "resumed"):
    assert os.path.isdir(tmp_path / name / "checkpoints" / "8")
  want = tf.train.load_checkpoint(os.path.join(straight, "checkpoints", "8", "state", "ckpt"))
  got = tf.train.load_checkpoint(os.path.join(resumed, "checkpoints", "8", "state", "ckpt"))
  names = [k for k in want.get_variable_to_shape_map() if "OBJECT_GRAPH" not in k]
  assert any("_trainable_variables" in k for k in names)
  for k in names:  # Bitwise: the resumed run saw the batches of the uninterrupted one.
    np.testing.assert_array_equal(got.get_tensor(k), want.get_tensor(k), err_msg=k)


def test_a_run_from_before_the_field_resumes_as_buffer_and_refuses_full(tmp_path):
  """config.json without `shuffle` (older runs) reads as 'buffer'; changing it changes the run."""
  import json  # pylint: disable=g-import-not-at-top
  from vae_dist.config import compatibility  # pylint: disable=g-import-not-at-top
  from vae_dist.errors import WorkdirError  # pylint: disable=g-import-not-at-top
  config = load_config("fashion_mnist", "smoke")
  old = json.loads(config.to_json_best_effort())
  del old["shuffle"]
  (tmp_path / "config.json").write_text(json.dumps(old))
  assert compatibility.read_recorded(str(tmp_path))["shuffle"] == "buffer"
  assert compatibility.check_resume(str(tmp_path), config, has_checkpoints=True,
                                    accept=False) is None
  config.shuffle = "full"
  with pytest.raises(WorkdirError, match="shuffle 'buffer' -> 'full'"):
    compatibility.check_resume(str(tmp_path), config, has_checkpoints=True, accept=False)


def test_one_batch_or_many_per_map_call_give_the_rows_of_the_permutation():
  """Small batches are made several per call (permuted_stream.group_size), large ones one each."""
  n, side = 20, 128  # 49,152 bytes per image.
  images = tf.data.Dataset.range(n).map(
      lambda i: tf.fill([side, side, 3], tf.cast(i, tf.uint8)))
  for batch, group in ((24, 1), (2, 10)):
    assert permuted_stream.group_size(batch * side * side * 3) == group
    for first_batch in (0, 3):
      ds = permuted_stream.batches(images, count=n, batch_size=batch, first_batch=first_batch,
                                   seed=4, pipeline=1, num_parallel_calls=2,
                                   finish=lambda position, x: {"image": x, "position": position})
      got = list(ds.take(25).as_numpy_iterator())
      assert [g["position"] for g in got] == [(first_batch + k) * batch for k in range(25)]
      rows = np.concatenate([g["image"][:, 0, 0, 0] for g in got])
      positions = np.arange(first_batch * batch, (first_batch + 25) * batch)
      want = permuted_stream.permutation_rows(positions, count=n, seed=4, pipeline=1).numpy()
      np.testing.assert_array_equal(rows, want)


def test_multi_worker_run_with_full_shuffle_trains_each_worker_on_its_part(data, tmp_path):
  """Each worker of a multi_worker_mirrored run reads its own part; with cache='device' each
  puts its part on its own device (the images a worker's replica gathers are its host's)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  root, _, _ = data
  workdir = str(tmp_path / "run")
  cluster = [f"127.0.0.1:{port}" for port in cli.free_ports(2)]
  args = cli.main_args("configs/fashion_mnist.py:smoke", workdir,
                       *cli.data_flags(root / "idx", root / "tfds"), "--config.shuffle=full",
                       "--config.strategy=multi_worker_mirrored", "--config.cache=device")
  procs = [subprocess.Popen(args, cwd=cli.ROOT, env=cli.env(TF_CONFIG=cli.tf_config(cluster, i)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  errs = [p.communicate(timeout=300)[1] for p in procs]
  for p, err in zip(procs, errs):
    assert p.returncode == 0, err[-3000:]
  assert "with 2 replica(s) on 2 host(s)" in errs[0]
  for i, err in enumerate(errs):  # Each worker holds its half of the 36 examples.
    assert f"Input pipeline {i}/2: 18 train examples" in err and "shuffle=full" in err
    assert "held by each replica's device (row numbers as input)" in err
  assert [r["step"] for r in cli.read_metrics(workdir) if "train/loss" in r] == [2, 4]

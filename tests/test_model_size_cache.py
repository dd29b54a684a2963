"""The model-size cache on disk (config.cache='disk'): same batches, atomic, shared, keyed by size.

All on one small generated Cartoon Set (40 RGBA PNGs of 40x40 in the real archive layout, 36 train
examples in 32 files), prepared once for the module.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import cli
import datagen
from conftest import load_config
from gcs_harness import gcs, gcs_namespace  # noqa: F401  # pylint: disable=unused-import
from vae_dist.data import input_pipeline
from vae_dist.data import model_size_cache
from vae_dist.data import sources


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  root = tmp_path_factory.mktemp("cache")
  datagen.write_cartoon_archive(root / "manual", 40)
  config = _config(root, cache="none")
  return root, sources.load_builder(config)


def _config(root, *, cache, size=16, binarize="dynamic", cache_dir=""):
  config = load_config("cartoon", "smoke")
  config.manual_dir, config.data_dir = str(root / "manual"), str(root / "tfds")
  config.image_size, config.cache, config.binarize = size, cache, binarize
  config.cache_dir = cache_dir
  config.batch_size = 4
  return config


def _batches(builder, config, n, *, pipelines=1, pipeline_id=0, start_step=0):
  ctx = tf.distribute.InputContext(num_input_pipelines=pipelines, input_pipeline_id=pipeline_id,
                                   num_replicas_in_sync=pipelines)
  config.batch_size = 4 * pipelines  # 4 per pipeline.
  ds = input_pipeline.train_dataset_fn(builder, config, start_step)(ctx)
  it = iter(ds)
  return [next(it)["image"].numpy() for _ in range(n)]


def _cache_files(folder):
  return sorted(f for f in os.listdir(folder) if f.endswith(model_size_cache.SUFFIX))


def test_disk_cache_gives_bitwise_the_batches_of_the_prepared_data(prepared, tmp_path):
  root, builder = prepared
  # 1, 2 and 3 pipelines (hosts), each reading whole files of the 32; every pipeline id.
  for pipelines in (1, 2, 3):
    for pid in range(pipelines):
      raw = _batches(builder, _config(root, cache="none"), 12, pipelines=pipelines,
                     pipeline_id=pid)
      disk = _batches(builder, _config(root, cache="disk", cache_dir=str(tmp_path / "c")), 12,
                      pipelines=pipelines, pipeline_id=pid)
      for a, b in zip(raw, disk):  # 12 batches of 4: several epochs of each part.
        np.testing.assert_array_equal(a, b)
  # Static binarisation and no binarisation too (the pixels themselves, not only the draws).
  for binarize in ("none", "static"):
    raw = _batches(builder, _config(root, cache="none", binarize=binarize), 3)
    disk = _batches(builder, _config(root, cache="disk", binarize=binarize,
                                     cache_dir=str(tmp_path / "c")), 3)
    np.testing.assert_array_equal(np.stack(raw), np.stack(disk))


def test_parts_of_files_read_from_the_cache_in_tfds_order(prepared, tmp_path):
  """More pipelines than files: each reads a contiguous part (tfds.even_splits), same order."""
  root, builder = prepared
  for pid in (0, 1):
    config = _config(root, cache="none", binarize="none")
    config.batch_size = 33
    ctx = tf.distribute.InputContext(num_input_pipelines=33, input_pipeline_id=pid,
                                     num_replicas_in_sync=33)
    raw, _ = input_pipeline._read_train_shard(  # pylint: disable=protected-access
        builder, config, input_pipeline._train_file_instructions(builder, config, ctx), "none")  # pylint: disable=protected-access
    config.cache, config.cache_dir = "disk", str(tmp_path / "c")
    disk, decode = input_pipeline._read_train_shard(  # pylint: disable=protected-access
        builder, config, input_pipeline._train_file_instructions(builder, config, ctx), "disk")  # pylint: disable=protected-access
    a = np.stack([x.numpy() for x in raw])
    b = decode(tf.stack(list(disk))).numpy()
    assert a.shape[0] >= 1
    np.testing.assert_array_equal(a, b)


def test_resumed_stream_from_the_disk_cache_repeats_its_batches(prepared, tmp_path):
  root, builder = prepared
  config = _config(root, cache="disk", cache_dir=str(tmp_path / "c"))
  batches = _batches(builder, config, 21)  # 36 examples, batch 4: 9 per epoch.
  for step in (1, 8, 9, 20):  # Inside an epoch, at and across epoch boundaries.
    resumed = _batches(builder, _config(root, cache="disk", cache_dir=str(tmp_path / "c")), 1,
                       start_step=step)
    np.testing.assert_array_equal(resumed[0], batches[step])


def test_cache_is_written_once_and_reused_by_later_pipelines(prepared, tmp_path):
  root, builder = prepared
  config = _config(root, cache="disk", cache_dir=str(tmp_path / "c"))
  folder = input_pipeline.disk_cache_folder(builder, config)
  # Two hosts: each writes only the files it reads (every other file).
  _batches(builder, config, 1, pipelines=2, pipeline_id=0)
  assert len(_cache_files(folder)) == 16
  _batches(builder, _config(root, cache="disk", cache_dir=str(tmp_path / "c")), 1, pipelines=2,
           pipeline_id=1)
  files = _cache_files(folder)
  assert len(files) == 32 and all(os.path.exists(os.path.join(folder, f + ".done"))
                                  for f in files)
  stamps = {f: os.stat(os.path.join(folder, f)).st_mtime_ns for f in files}
  # A later run with one pipeline (another host count) reads them all and writes nothing.
  _batches(builder, _config(root, cache="disk", cache_dir=str(tmp_path / "c")), 2)
  assert {f: os.stat(os.path.join(folder, f)).st_mtime_ns for f in files} == stamps
  assert not [f for f in os.listdir(folder) if ".tmp-" in f]


def _cut(path, keep):
  """Truncates a file to keep(size) bytes; returns what it held."""
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:keep(len(data))])
  return data


def test_a_cache_file_without_its_done_mark_is_rebuilt_not_read(prepared, tmp_path):
  root, builder = prepared
  config = _config(root, cache="disk", cache_dir=str(tmp_path / "c"))
  want = _batches(builder, config, 9)
  folder = input_pipeline.disk_cache_folder(builder, config)
  victim = os.path.join(folder, _cache_files(folder)[5])
  # As if the writer died: half the file, no mark (and a leftover temporary file).
  data = _cut(victim, lambda size: size // 2)
  os.remove(victim + ".done")
  with open(victim + ".tmp-deadhost-1-0", "wb") as f:
    f.write(b"junk")
  got = _batches(builder, _config(root, cache="disk", cache_dir=str(tmp_path / "c")), 9)
  np.testing.assert_array_equal(np.stack(got), np.stack(want))
  with open(victim, "rb") as f:
    assert f.read() == data


def test_temporary_files_of_dead_writers_are_removed_and_live_ones_kept(prepared, tmp_path):
  """By owner on this host (its pid is gone, untouched a minute), by age (a day) for others."""
  import socket  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  root, builder = prepared
  config = _config(root, cache="disk", cache_dir=str(tmp_path / "c"))
  _batches(builder, config, 1)
  folder = input_pipeline.disk_cache_folder(builder, config)
  dead = subprocess.Popen(["true"])  # A pid that was this host's and is gone.
  dead.wait()
  host, now = socket.gethostname(), time.time()
  first = _cache_files(folder)[0]
  ages = {  # name: (seconds untouched, removed?)
      f"{first}.tmp-{host}-{dead.pid}-0a0a0a0a": (120, True),
      f"{first}.tmp-{host}-{dead.pid}-1b1b1b1b": (10, False),  # Its writer may be a namesake's.
      f"{first}.tmp-{host}-{os.getpid()}-2c2c2c2c": (120, False),  # A live writer.
      f"{first}.tmp-otherhost-{dead.pid}-3d3d3d3d": (3600, False),
      f"{first}.tmp-otherhost-12-4e4e4e4e": (2 * 86400, True),
      f"{first}.done.tmp-5f5f5f5f": (2 * 86400, True),
  }
  for name, (age, _) in ages.items():
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
      f.write(b"partial")
    os.utime(path, (now - age, now - age))
  got = _batches(builder, _config(root, cache="disk", cache_dir=str(tmp_path / "c")), 9)
  left = set(os.listdir(folder))
  for name, (_, removed) in ages.items():
    assert (name not in left) == removed, name
  assert len(_cache_files(folder)) == 32 and len(got) == 9


def test_a_cache_for_another_image_size_is_never_used(prepared, tmp_path):
  root, builder = prepared
  c16 = _config(root, cache="disk", size=16, cache_dir=str(tmp_path / "c"))
  _batches(builder, c16, 1)
  c32 = _config(root, cache="disk", size=32, cache_dir=str(tmp_path / "c"))
  c32.decoder.filters = list(c32.decoder.filters)
  f16 = input_pipeline.disk_cache_folder(builder, c16)
  f32 = input_pipeline.disk_cache_folder(builder, c32)
  assert f16 != f32
  for other in (dict(channels=1), dict(crop="center"), dict(resize_method="nearest")):
    c = _config(root, cache="disk", size=16, cache_dir=str(tmp_path / "c"))
    for k, v in other.items():
      c[k] = v
    assert input_pipeline.disk_cache_folder(builder, c) != f16, other
  disk = _batches(builder, c32, 2)
  raw = _batches(builder, _config(root, cache="none", size=32), 2)
  assert disk[0].shape == (4, 32, 32, 3)
  np.testing.assert_array_equal(np.stack(disk), np.stack(raw))


def test_auto_picks_memory_when_it_fits_else_disk(prepared, tmp_path):
  root, builder = prepared
  config = _config(root, cache="auto", cache_dir=str(tmp_path / "auto"))
  folder = input_pipeline.disk_cache_folder(builder, config)
  _batches(builder, config, 1)
  assert not os.path.exists(folder)  # 36 images of 16x16x3 fit in 2 GiB: memory.
  config = _config(root, cache="auto", cache_dir=str(tmp_path / "auto"))
  config.cache_max_bytes = 1000
  _batches(builder, config, 1)
  assert len(_cache_files(folder)) == 32


def test_a_cache_dir_that_cannot_be_written_is_one_error_line(prepared, tmp_path):
  root, _ = prepared
  blocker = tmp_path / "file"
  blocker.write_text("not a folder")
  proc = cli.run_main("configs/cartoon.py:smoke", str(tmp_path / "run"),
                      f"--config.manual_dir={root / 'manual'}",
                      f"--config.data_dir={root / 'tfds'}", "--config.cache=disk",
                      f"--config.cache_dir={blocker}")
  assert proc.returncode == 1, proc.stderr[-2000:]
  lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and "Model-size cache" in lines[0] and "config.cache_dir" in lines[0]


def test_auto_falls_back_to_decoding_when_the_cache_cannot_be_written(prepared, tmp_path):
  root, builder = prepared
  blocker = tmp_path / "file"
  blocker.write_text("not a folder")
  config = _config(root, cache="auto", cache_dir=str(blocker))
  config.cache_max_bytes = 0  # Too large for memory: auto picks the disk, which fails.
  got = _batches(builder, config, 3)
  want = _batches(builder, _config(root, cache="none"), 3)
  np.testing.assert_array_equal(np.stack(got), np.stack(want))


def _pipeline_script(root, body):
  """A program for another process: the smoke Cartoon config on the prepared data, then body."""
  return ("import sys; sys.path.insert(0, 'tests')\n"
          "import numpy as np, tensorflow as tf\n"
          "from conftest import load_config\n"
          "from vae_dist.data import input_pipeline, sources\n"
          "c = load_config('cartoon', 'smoke')\n"
          f"c.manual_dir, c.data_dir = {str(root / 'manual')!r}, {str(root / 'tfds')!r}\n" + body)


def test_two_processes_build_the_same_cache_at_once_and_agree(prepared, tmp_path):
  """Two hosts starting together on one shared data dir: both finish, the cache is whole."""
  root, builder = prepared
  cache_dir = str(tmp_path / "c")
  script = _pipeline_script(
      root, f"c.image_size, c.cache, c.cache_dir, c.batch_size = 16, 'disk', {cache_dir!r}, 4\n"
      "b = sources.load_builder(c)\n"
      "it = iter(input_pipeline.train_dataset_fn(b, c, 0)(tf.distribute.InputContext()))\n"
      "np.save(sys.argv[1], np.stack([next(it)['image'].numpy() for _ in range(9)]))\n")
  procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / f"out{i}.npy")],
                            cwd=cli.ROOT, env=cli.env(), stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  for p in procs:
    assert p.wait(timeout=120) == 0, p.stderr.read()[-2000:]
  want = np.stack(_batches(builder, _config(root, cache="none", binarize="none"), 9))
  for i in range(2):
    np.testing.assert_array_equal(np.load(tmp_path / f"out{i}.npy"), want)
  folder = input_pipeline.disk_cache_folder(builder, _config(root, cache="disk",
                                                             cache_dir=str(tmp_path / "c")))
  assert len(_cache_files(folder)) == 32
  assert not [f for f in os.listdir(folder) if ".tmp-" in f]


def test_uint8_batches_scaled_in_the_step_equal_the_float_batches_of_the_host(prepared, tmp_path):
  """config.feed_dtype: a quarter of the bytes to the device, bitwise the same model input."""
  root, builder = prepared
  for binarize in ("none", "static", "dynamic"):
    for cache in ("none", "disk"):
      config = _config(root, cache=cache, binarize=binarize, cache_dir=str(tmp_path / "c"))
      fed = _batches(builder, config, 3)
      assert fed[0].dtype == np.uint8 and fed[0].nbytes == 4 * 16 * 16 * 3
      config = _config(root, cache=cache, binarize=binarize, cache_dir=str(tmp_path / "c"))
      config.feed_dtype = "float32"
      want = _batches(builder, config, 3)
      assert want[0].dtype == np.float32 and want[0].nbytes == 4 * fed[0].nbytes
      got = [input_pipeline.model_input(tf.constant(b), config).numpy() for b in fed]
      np.testing.assert_array_equal(np.stack(got), np.stack(want))
      if binarize != "none":
        assert set(np.unique(np.stack(fed))) == {0, 1}


def test_a_cache_file_of_the_wrong_length_is_rebuilt_not_read(prepared, tmp_path):
  """A file replaced or cut short after its mark (a copy gone wrong) does not pass as whole."""
  root, builder = prepared
  config = _config(root, cache="disk", cache_dir=str(tmp_path / "c"))
  want = _batches(builder, config, 9)
  folder = input_pipeline.disk_cache_folder(builder, config)
  victim = os.path.join(folder, _cache_files(folder)[3])
  data = _cut(victim, lambda size: size - 1)
  got = _batches(builder, _config(root, cache="disk", cache_dir=str(tmp_path / "c")), 9)
  np.testing.assert_array_equal(np.stack(got), np.stack(want))
  with open(victim, "rb") as f:
    assert f.read() == data


def test_cache_on_gs_is_built_marked_and_read_back_bitwise(prepared, gcs, tmp_path):  # pylint: disable=redefined-outer-name
  """cache_dir on gs:// (TensorFlow's GCS client, the emulator): written once, same batches."""
  root, builder = prepared
  script = _pipeline_script(
      root, "c.image_size, c.cache, c.cache_dir = 16, 'disk', 'gs://vae-test/cache'\n"
      "c.batch_size = 32\n"
      "b = sources.load_builder(c)\n"
      "ctx = tf.distribute.InputContext(8, 0, 8)  # Host 0 of 8: 4 files of 32, fewer requests.\n"
      "for out in sys.argv[1:]:  # The second pipeline reads what the first wrote.\n"
      "  it = iter(input_pipeline.train_dataset_fn(b, c, 0)(ctx))\n"
      "  np.save(out, np.stack([next(it)['image'].numpy() for _ in range(9)]))\n")
  outs = [str(tmp_path / f"gs{i}.npy") for i in range(2)]
  proc = gcs.run([sys.executable, "-c", script, *outs], timeout=180)
  assert proc.returncode == 0, proc.stderr[-3000:]
  want = np.stack(_batches(builder, _config(root, cache="none", binarize="none"), 9, pipelines=8))
  for out in outs:
    np.testing.assert_array_equal(np.load(out), want)
  names = gcs.list("vae-test", "cache/")
  data = [n for n in names if n.endswith(model_size_cache.SUFFIX)]
  assert len(data) == 4 and all(n + model_size_cache.DONE in names for n in data)
  assert not [n for n in names if model_size_cache.TMP in n]
  # Each file and mark written once (under its own name: the rename's copy), by the first
  # pipeline only (folders are objects too on gs://, made by makedirs).
  final = [w for w in gcs.stats()["write_order"] if w.startswith("vae-test/cache/")
           and model_size_cache.TMP not in w and not w.endswith("/")]
  assert sorted(final) == sorted(f"vae-test/{n}" for n in data + [n + model_size_cache.DONE
                                                                   for n in data]), final


def test_cache_fields_are_checked_with_one_line_errors():
  from vae_dist.config import checks  # pylint: disable=g-import-not-at-top
  from vae_dist.errors import ConfigError  # pylint: disable=g-import-not-at-top
  for field, value in (("cache", "disc"), ("cache_max_bytes", -1), ("input_parallelism", -2),
                       ("prefetch_batches", -1), ("feed_dtype", "float16")):
    config = load_config("cartoon", "smoke")
    config[field] = value
    with pytest.raises(ConfigError) as e:
      checks.validate(config)
    assert str(e.value).startswith(f"config.{field}:") and "\n" not in str(e.value)

"""vae_dist.generate on a tiny trained run: every --what, its file, its size and its content."""
import io
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import cli
from conftest import load_config
import datagen
import trained_run_fixture
from vae_dist import checkpointing
from vae_dist import cli as vae_cli
from vae_dist.data import sources
from vae_dist import generate
from vae_dist.model import latent_paths
from vae_dist.model import networks
from vae_dist.tools import concepts
from vae_dist.tools import drawings
from vae_dist.tools import trained_run
from vae_dist.viz import pictures
from vae_dist.viz import plots

S = 28  # Image size of the run.


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  return trained_run_fixture.shared_run(tmp_path_factory)


def _split(run, split):
  """(images, labels) of a split in the order the data set stores them (TFDS shuffles keys)."""
  builder = sources.load_builder(trained_run.load_config(run["workdir"]))
  examples = list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))
  return (np.stack([e["image"][..., 0] for e in examples]),
          np.array([e["label"] for e in examples]))


def _open(path):
  image = Image.open(path)
  image.load()
  return image


ZOOM = 3  # 28-pixel images are enlarged 3 times (to at least pictures.MIN_CELL = 64 pixels).
PAD = 2  # White pixels between enlarged images.


def _margins(row_labels=(), col_labels=()):
  """(top, left): the label bands above the columns and left of the rows."""
  left = max(pictures.text_size(t)[0] for t in row_labels) + 8 if row_labels else 0
  top = max(pictures.text_size(t)[1] for t in col_labels) + 8 if col_labels else 0
  return top, left


def _size(n, cols, *, size=S, zoom=ZOOM, pad=PAD, row_labels=(), col_labels=()):
  """(height, width) of n enlarged images in `cols` columns below and right of their labels."""
  rows = -(-n // cols)
  top, left = _margins(row_labels, col_labels)
  cell = size * zoom
  return top + rows * (cell + pad) - pad, left + cols * (cell + pad) - pad


_Q5 = latent_paths.normal_quantiles(5)
_T6 = np.linspace(0, 1, 6)


@pytest.mark.parametrize("what, opts, size", [
    ("samples", dict(num=10), _size(10, 4)),
    ("samples", dict(num=9, zoom=2), tuple(2 * v for v in _size(9, 3))),
    ("reconstructions", dict(num=5),
     _size(10, 5, row_labels=("original", "reconstruction"),
           col_labels=[f"#{i}" for i in range(5)])),
    ("manifold", dict(grid=5),
     _size(25, 5, pad=0, row_labels=[f"z1={q:.1f}" for q in _Q5],
           col_labels=["z0=-1.6", "-0.7", "0.0", "0.7", "1.6"])),
    ("interpolation", dict(indices=(2, 3), steps=6),
     _size(8, 8, col_labels=["#2"] + [f"t={t:.2f}" for t in _T6] + ["#3"])),
    ("interpolation", dict(indices=(2, 3), steps=4, interpolation="spherical"),
     _size(6, 6, col_labels=["#2", "t=0.00", "t=0.33", "t=0.67", "t=1.00", "#3"])),
    ("attribute", dict(attribute="Sandal", indices=(0, 1, 2), alphas=(-1, 0, 1, 2)),
     _size(15, 5, row_labels=("#0", "#1", "#2"),
           col_labels=("original", "alpha -1", "alpha +0", "alpha +1", "alpha +2"))),
    ("scatter", dict(dpi=50, size_inches=4), (200, 200)),
])
def test_each_picture_is_a_png_of_the_expected_size(run, tmp_path, what, opts, size):
  out = str(tmp_path / f"{what}.png")
  summary = generate.generate(run["workdir"], what, out, opts=drawings.Options(**opts))
  image = _open(out)
  assert image.format == "PNG"
  assert (image.height, image.width) == size
  assert (summary["height"], summary["width"]) == size
  assert summary["step"] == 60
  pixels = np.asarray(image)
  assert pixels.std() > 0  # Not a blank picture.
  assert not os.path.exists(out + ".tmp")


def test_default_pictures_are_readable_sizes(run, tmp_path):
  """The sizes users complained of (231x57 reconstructions, 347x28 interpolation) are gone."""
  for what in ("reconstructions", "interpolation", "samples"):
    summary = generate.generate(run["workdir"], what, str(tmp_path / f"{what}.png"))
    assert summary["height"] >= 64 + 2 * 8 and summary["width"] >= 500, summary


def _ink(pixels):
  """Pixels darker than mid-grey: text on the white label bands."""
  return int((np.asarray(pixels, float) < 128).sum())


def test_reconstructions_show_labelled_test_images_above_their_reconstructions(run, tmp_path):
  out = str(tmp_path / "r.png")
  generate.generate(run["workdir"], "reconstructions", out, opts=drawings.Options(num=4))
  pixels = np.asarray(_open(out))
  images, _ = _split(run, "test")
  top, left = _margins(("original", "reconstruction"), ["#0", "#1", "#2", "#3"])
  cell = S * ZOOM
  for i in range(4):
    x = left + i * (cell + PAD)
    box = pixels[top:top + cell, x:x + cell]
    # Enlarged 3 times, nearest neighbour: every third pixel is the image. The run thresholds
    # at 0.5 (config.binarize='static').
    np.testing.assert_array_equal(box[::ZOOM, ::ZOOM], np.where(images[i] > 127, 255, 0))
    np.testing.assert_array_equal(box, np.repeat(np.repeat(box[::ZOOM, ::ZOOM], 3, 0), 3, 1))
    assert _ink(pixels[:top, x:x + cell]) > 0, f"no label above column {i}"
  for r in range(2):  # "original", "reconstruction" left of the two rows.
    y = top + r * (cell + PAD)
    assert _ink(pixels[y:y + cell, :left]) > 0, f"no label left of row {r}"
  # The labels are the only ink outside the images: the bands hold nothing else.
  assert _ink(pixels[:top, :left]) == 0


def test_samples_follow_seed_and_temperature(run):
  loaded = trained_run.load(run["workdir"])
  a = drawings.samples(loaded, drawings.Options(num=4, seed=1))
  b = drawings.samples(loaded, drawings.Options(num=4, seed=1))
  c = drawings.samples(loaded, drawings.Options(num=4, seed=2))
  np.testing.assert_array_equal(a.pixels, b.pixels)
  assert np.abs(a.pixels - c.pixels).max() > 0
  # Temperature 0 puts every sample at z = 0: four copies of one image.
  cold = drawings.samples(loaded, drawings.Options(num=4, temperature=0.0))
  np.testing.assert_allclose(cold.image(0), cold.image(3))
  want = drawings.decode_images(loaded.model, np.zeros([1, 2], np.float32))[0]
  np.testing.assert_allclose(cold.image(0), want, atol=1e-6)


def test_manifold_tiles_are_decodes_of_the_quantile_grid(run):
  loaded = trained_run.load(run["workdir"])
  picture = drawings.manifold(loaded, drawings.Options(grid=3))
  q = latent_paths.normal_quantiles(3)
  np.testing.assert_allclose(q, [-1.6448536, 0.0, 1.6448536], atol=1e-6)
  # Row 0, column 2: z = (q[2], q[0]) as in the TensorFlow tutorial.
  want = drawings.decode_images(loaded.model, np.array([[q[2], q[0]]], np.float32))[0]
  np.testing.assert_allclose(picture.image(2), want, atol=1e-6)


def test_interpolation_starts_and_ends_at_the_latent_means(run):
  loaded = trained_run.load(run["workdir"])
  builder = sources.load_builder(loaded.config)
  picture = drawings.interpolation(loaded, drawings.Options(indices=(4, 7), steps=3), builder)
  images = drawings.eval_examples(builder, loaded.config, [4, 7])["image"]
  decoded = drawings.decode_images(loaded.model, drawings.encode_means(loaded.model, images))
  tiles = [picture.image(i) for i in range(5)]
  np.testing.assert_allclose(tiles[0], images[0])
  np.testing.assert_allclose(tiles[4], images[1])
  np.testing.assert_allclose(tiles[1], decoded[0], atol=1e-5)
  np.testing.assert_allclose(tiles[3], decoded[1], atol=1e-5)


def test_slerp_and_lerp():
  a, b = np.array([3.0, 0.0]), np.array([0.0, 3.0])
  path = latent_paths.slerp(a, b, np.linspace(0, 1, 5))
  np.testing.assert_allclose(path[0], a, atol=1e-6)
  np.testing.assert_allclose(path[-1], b, atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(path, axis=1), 3.0, rtol=1e-6)  # On the circle.
  np.testing.assert_allclose(latent_paths.lerp(a, b, [0.5]), [[1.5, 1.5]])
  # Parallel vectors fall back to the straight line.
  np.testing.assert_allclose(latent_paths.slerp(a, 2 * a, [0.5]), [[4.5, 0.0]], rtol=1e-6)


def test_concept_vector_of_a_label_is_saved_and_reused(run):
  loaded = trained_run.load(run["workdir"])
  builder = sources.load_builder(loaded.config)
  _, train_labels = run["data"]["train"]
  first = drawings.concept_vector(loaded, drawings.Options(attribute="Trouser"), builder)
  npy, meta = concepts.paths(run["workdir"], 60, "Trouser")
  assert os.path.exists(npy) and os.path.exists(meta)
  info = json.load(open(meta))
  assert info["positives"] == int((train_labels == 1).sum()) > 0
  assert info["negatives"] == 96 - info["positives"]
  assert info["split"] == "train" and info["step"] == 60 and info["examples"] == 96
  np.testing.assert_allclose(np.load(npy), first.vector)
  assert np.linalg.norm(first.vector) == pytest.approx(info["norm"], rel=1e-5)
  # Asked again, by index this time: the same class, so the same file, not recomputed.
  again = drawings.concept_vector(loaded, drawings.Options(attribute="label=Trouser"), builder)
  np.testing.assert_array_equal(again.vector, first.vector)
  # The vector is the difference of the means of the latent means.
  means, feats = drawings.latents_and_features(loaded, builder, "train", -1)
  pos = feats["label"] == 1
  want = means[pos].mean(0) - means[~pos].mean(0)
  np.testing.assert_allclose(first.vector, want, rtol=1e-4, atol=1e-6)


def test_attribute_strip_column_for_alpha_zero_is_the_reconstruction(run, tmp_path):
  loaded = trained_run.load(run["workdir"])
  builder = sources.load_builder(loaded.config)
  picture, concept = drawings.attribute(
      loaded, drawings.Options(attribute="5", indices=(3,), alphas=(0.0, 3.0)), builder)
  assert concept.info["description"] == "label=Sandal"
  image = drawings.eval_examples(builder, loaded.config, [3])["image"]
  z = drawings.encode_means(loaded.model, image)
  np.testing.assert_allclose(picture.image(0), image[0])
  np.testing.assert_allclose(picture.image(1), drawings.decode_images(loaded.model, z)[0],
                             atol=1e-5)
  shifted = drawings.decode_images(loaded.model, z + 3.0 * concept.vector)[0]
  np.testing.assert_allclose(picture.image(2), shifted, atol=1e-5)


def test_unknown_attribute_and_attribute_without_examples_are_clear_errors(run):
  with pytest.raises(concepts.AttributeSpecError, match="unknown attribute 'Smiling'.*Sandal"):
    generate.generate(run["workdir"], "attribute", opts=drawings.Options(attribute="Smiling"))
  _, train_labels = _split(run, "train")
  # A class missing from the first few train examples: no positive example among them.
  k = 3
  absent = next(c for c in range(10) if c not in train_labels[:k])
  with pytest.raises(concepts.NoExamplesError, match="none of the 3 examples"):
    generate.generate(run["workdir"], "attribute",
                      opts=drawings.Options(attribute=str(absent), max_examples=k))


def test_missing_workdir_no_checkpoint_and_bad_options_are_clear_errors(run, tmp_path):
  with pytest.raises(trained_run.RunNotFoundError, match="does not exist"):
    generate.generate(str(tmp_path / "nope"), "samples")
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(trained_run.RunNotFoundError, match="no config.json"):
    generate.generate(str(empty), "samples")
  (empty / "config.json").write_text(open(os.path.join(run["workdir"], "config.json")).read())
  with pytest.raises(trained_run.NoCheckpointError, match="no committed checkpoint"):
    generate.generate(str(empty), "samples")
  with pytest.raises(trained_run.NoCheckpointError, match="20, 40, 60"):
    generate.generate(run["workdir"], "samples", step=7)
  with pytest.raises(vae_cli.UsageError, match="outside split"):
    generate.generate(run["workdir"], "reconstructions", str(tmp_path / "r.png"),
                      opts=drawings.Options(indices=(0, 20)))
  with pytest.raises(vae_cli.UsageError, match="GIF"):
    generate.generate(run["workdir"], "gif", str(tmp_path / "g.png"))


def test_step_picks_the_checkpoint(run, tmp_path):
  early = generate.generate(run["workdir"], "samples", str(tmp_path / "a.png"), step=20,
                            opts=drawings.Options(num=4))
  late = generate.generate(run["workdir"], "samples", str(tmp_path / "b.png"),
                           opts=drawings.Options(num=4))
  assert (early["step"], late["step"]) == (20, 60)
  assert np.abs(np.asarray(_open(early["out"]), float) -
                np.asarray(_open(late["out"]), float)).max() > 0


def test_concept_specs_for_cartoon_celeba_and_labels():
  cartoon = {"hair": [str(i) for i in range(111)], "glasses": [str(i) for i in range(12)]}
  sel = concepts.parse("hair=3", None, cartoon)
  np.testing.assert_array_equal(sel.positives(np.array([3, 4, 3])), [True, False, True])
  sel = concepts.parse("hair != 3", None, cartoon)
  np.testing.assert_array_equal(sel.positives(np.array([3, 4, 3])), [False, True, False])
  # Bare categorical name: anything but the most common variant (Cartoon Set: 11, no glasses).
  sel = concepts.parse("Glasses", None, cartoon)
  np.testing.assert_array_equal(sel.positives(np.array([11, 2, 11, 11, 0])),
                                [False, True, False, False, True])
  celeba = {"Smiling": ["False", "True"], "Male": ["False", "True"]}
  sel = concepts.parse("Smiling", None, celeba)
  assert (sel.feature, sel.op, sel.value) == ("Smiling", "==", 1)
  assert concepts.parse("smiling=False", None, celeba).value == 0
  names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot"]
  for spec in ("Sandal", "sandal", "5", "label=5", "label=Sandal"):
    assert concepts.parse(spec, names, {}).value == 5, spec
  assert concepts.file_name("label=T-shirt/top") == "label=T-shirt_top"
  with pytest.raises(concepts.AttributeSpecError, match="hair.*no class '111'"):
    concepts.parse("hair=111", None, cartoon)
  with pytest.raises(concepts.AttributeSpecError, match="neither labels nor attributes"):
    concepts.parse("Smiling", None, {})
  with pytest.raises(concepts.NoExamplesError, match="all 2 examples"):
    concepts.select(np.array([1, 1]), concepts.parse("Smiling", None, celeba), spec="Smiling",
                    split="test")


def test_scatter_projects_wide_latents_on_principal_components():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(50, 5)) * np.array([5.0, 3.0, 0.1, 0.1, 0.1])
  points, (xlabel, _) = plots.project(z)
  assert points.shape == (50, 2) and xlabel.startswith("PC 1")
  _, frac = latent_paths.pca_2d(z)
  assert frac.sum() > 0.95
  png = plots.scatter_png(z, rng.integers(0, 3, 50), ["a", "b", "c"], title="t", dpi=40,
                          size_inches=3)
  assert Image.open(io.BytesIO(png)).size == (120, 120)


def _run_generate(*args):
  return subprocess.run([sys.executable, "-m", "vae_dist.generate", *args], cwd=cli.ROOT,
                        env=cli.env(), capture_output=True, text=True, timeout=300)


def test_cli_writes_a_gif_with_one_frame_per_checkpoint(run, tmp_path):
  out = str(tmp_path / "progress.gif")
  proc = _run_generate(f"--workdir={run['workdir']}", "--what=gif", f"--out={out}", "--num=4",
                       "--zoom=2")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"Wrote {out}" in proc.stdout and "3 frames" in proc.stdout
  gif = Image.open(out)
  assert gif.format == "GIF"
  assert gif.n_frames == trained_run_fixture.NUM_CHECKPOINTS == len(
      trained_run.committed_steps(run["workdir"]))
  side = 2 * _size(4, 2)[0]  # Two by two samples, enlarged, then --zoom=2.
  assert gif.size == (side, side + 12)  # A 12-pixel caption band on top.
  frames = []
  for i in range(gif.n_frames):
    gif.seek(i)
    frames.append(np.asarray(gif.convert("L"), float))
  assert all(np.abs(frames[i] - frames[i + 1]).max() > 0 for i in range(len(frames) - 1))


def test_cli_error_is_one_line_without_traceback(run, tmp_path):
  proc = _run_generate(f"--workdir={run['workdir']}", "--what=attribute", "--attribute=Smiling",
                       f"--out={tmp_path / 'a.png'}")
  assert proc.returncode == 1
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1 and "unknown attribute 'Smiling'" in errors[0], proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  assert not os.path.exists(tmp_path / "a.png")


@pytest.fixture(scope="module")
def cartoon_run(tmp_path_factory):
  """A Cartoon Set run (RGB, 18 attributes, untrained weights) laid out as training lays it out."""
  root = tmp_path_factory.mktemp("cartoon")
  written = datagen.write_cartoon_archive(root / "manual", 30, size=40)
  config = load_config("cartoon", "smoke")
  config.manual_dir = str(root / "manual")
  config.data_dir = str(root / "tfds")
  config.latent_dim = 4
  workdir = root / "run"
  workdir.mkdir()
  (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
  tf.keras.utils.set_random_seed(0)
  manager = checkpointing.CheckpointManager(directory=str(workdir / "checkpoints"),
                                            async_save=False)
  manager.save(5, tf.train.Checkpoint(model=networks.VAE(config)))
  return str(workdir), written


def test_cartoon_attributes_rgb_pictures_and_scatter_by_attribute(cartoon_run, tmp_path):
  workdir, written = cartoon_run
  summary = generate.generate(workdir, "attribute", str(tmp_path / "hair.png"),
                              opts=drawings.Options(attribute="hair=3", alphas=(-1, 1)))
  image = _open(summary["out"])
  assert image.mode == "RGB"
  # The test split (10% of 30, by hash) has 3 images: 3 rows of original + 2 alphas at 32x32.
  # 32-pixel images are enlarged twice (to 64 pixels).
  assert image.size == _size(9, 3, size=32, zoom=2, row_labels=("#0", "#1", "#2"),
                             col_labels=("original", "alpha -1", "alpha +1"))[::-1]
  info = summary["concept"]
  hair = [e["attributes"]["hair"] for e in written["examples"].values()]
  assert info["examples"] == 27 and info["split"] == "train"
  assert info["positives"] + info["negatives"] == 27 and info["positives"] <= hair.count(3)
  # A bare categorical attribute: not its most common variant, named in the JSON.
  glasses = generate.generate(workdir, "attribute", str(tmp_path / "glasses.png"),
                              opts=drawings.Options(attribute="glasses", indices=(0,)))
  assert "(its most common variant)" in glasses["concept"]["description"]
  assert os.path.exists(concepts.paths(workdir, 5, "glasses")[1])
  scatter = generate.generate(workdir, "scatter", str(tmp_path / "s.png"),
                              opts=drawings.Options(color_by="hair_color", dpi=30,
                                                    size_inches=4))
  assert _open(scatter["out"]).size == (120, 120)
  with pytest.raises(concepts.AttributeSpecError, match="hair_color"):
    generate.generate(workdir, "scatter", str(tmp_path / "t.png"),
                      opts=drawings.Options(color_by="smile"))


def test_a_gif_of_one_checkpoint_warns(cartoon_run, tmp_path, caplog):
  workdir, _ = cartoon_run
  with caplog.at_level("WARNING"):
    summary = generate.generate(workdir, "gif", str(tmp_path / "one.gif"),
                                opts=drawings.Options(num=4))
  assert summary["frames"] == 1
  warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
  assert any("The GIF has one frame" in w and "does not move" in w for w in warnings), warnings

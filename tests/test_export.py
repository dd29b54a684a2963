"""vae_dist.export: the SavedModel, loaded with TensorFlow alone, matches its checkpoint."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import cli
import trained_run_fixture
from vae_dist.data import sources
from vae_dist.data import split_examples
from vae_dist.errors import WorkdirError
from vae_dist import export
from vae_dist.tools import trained_run

# Run in a fresh interpreter: imports TensorFlow and NumPy only, calls every signature on the
# inputs in inputs.npz and saves what comes out, with the signatures' own specs.
_LOADER = r"""
import json, sys
import numpy as np
import tensorflow as tf

export_dir, inputs_path, outputs_path = sys.argv[1:4]
inputs = dict(np.load(inputs_path))
m = tf.saved_model.load(export_dir)
calls = {
    "encode": {"images": inputs["images"]},
    "decode": {"z": inputs["z"]},
    "sample": {"num_samples": np.int32(5), "seed": np.array([4, 2], np.int64),
               "temperature": np.float32(0.7)},
    "reconstruct": {"images": inputs["images"]},
}
outputs, specs = {}, {}
for name, kwargs in calls.items():
  fn = m.signatures[name]
  out = fn(**{k: tf.constant(v) for k, v in kwargs.items()})
  outputs.update({f"{name}/{k}": v.numpy() for k, v in out.items()})
  specs[name] = {
      "inputs": {k: [s.dtype.name, s.shape.as_list()]
                 for k, s in fn.structured_input_signature[1].items()},
      "outputs": {k: [s.dtype.name, s.shape.as_list()] for k, s in fn.structured_outputs.items()},
  }
# The attribute form of the same functions.
outputs["attr/encode/mean"] = m.encode(tf.constant(inputs["images"]))["mean"].numpy()
np.savez(outputs_path, **outputs)
print(json.dumps({"specs": specs, "modules": sorted(
    k for k in sys.modules if k.split(".")[0] in ("vae_dist", "ml_collections"))}))
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  return trained_run_fixture.shared_run(tmp_path_factory)


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
  """The run exported with the command line."""
  out = str(tmp_path_factory.mktemp("export") / "vae")
  proc = subprocess.run(
      [sys.executable, "-m", "vae_dist.export", f"--workdir={run['workdir']}", f"--out={out}"],
      cwd=cli.ROOT, env=cli.env(), capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"to {out}" in proc.stdout
  return out


def test_export_directory_layout(exported):
  names = set(os.listdir(exported))
  assert {"saved_model.pb", "variables", "README.md", "vae_export.json", "config.json"} <= names
  assert not [n for n in os.listdir(os.path.dirname(exported)) if ".tmp" in n]
  info = json.load(open(os.path.join(exported, "vae_export.json")))
  assert info["source"]["step"] == 60 and info["source"]["latent_dim"] == 2
  assert list(info["signatures"]) == ["encode", "decode", "sample", "reconstruct"]
  readme = open(os.path.join(exported, "README.md")).read()
  for name in ("encode", "decode", "sample", "reconstruct", "`images`", "`logvar`", "[0, 1]"):
    assert name in readme


def test_fresh_process_with_only_tensorflow_matches_the_checkpoint(run, exported, tmp_path):
  model_run = trained_run.load(run["workdir"])
  config = model_run.config
  builder = sources.load_builder(config)
  images = split_examples.take(builder, config, config.eval_split, range(6))["image"]
  z = np.random.default_rng(0).normal(size=(7, 2)).astype(np.float32)
  np.savez(tmp_path / "inputs.npz", images=images, z=z)
  proc = subprocess.run(
      [sys.executable, "-c", _LOADER, exported, str(tmp_path / "inputs.npz"),
       str(tmp_path / "outputs.npz")],
      cwd=str(tmp_path), env={k: v for k, v in cli.env().items() if k != "PYTHONPATH"},
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(proc.stdout.strip().splitlines()[-1])
  assert report["modules"] == []  # Neither vae_dist nor its config library was needed.
  got = dict(np.load(tmp_path / "outputs.npz"))

  model = model_run.model
  mean, logvar = (t.numpy() for t in model.encode(tf.constant(images)))
  logits_z = model.decode(tf.constant(z)).numpy()
  logits_rec = model.decode(tf.constant(mean)).numpy()
  eps = tf.random.stateless_normal([5, 2], seed=[4, 2], alg="philox").numpy()
  z_sample = np.float32(0.7) * eps
  logits_sample = model.decode(tf.constant(z_sample)).numpy()
  sigmoid = lambda v: 1.0 / (1.0 + np.exp(-v))
  want = {
      "encode/mean": mean, "encode/logvar": logvar,
      "decode/logits": logits_z, "decode/image": sigmoid(logits_z),
      "sample/z": z_sample, "sample/logits": logits_sample, "sample/image": sigmoid(logits_sample),
      "reconstruct/mean": mean, "reconstruct/logvar": logvar,
      "reconstruct/logits": logits_rec, "reconstruct/image": sigmoid(logits_rec),
      "attr/encode/mean": mean,
  }
  assert set(got) == set(want)
  for key, value in want.items():
    np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-5, err_msg=key)
  assert 0.0 <= got["sample/image"].min() and got["sample/image"].max() <= 1.0

  # What vae_export.json documents is what the SavedModel has.
  info = json.load(open(os.path.join(exported, "vae_export.json")))
  for name, sig in info["signatures"].items():
    for kind in ("inputs", "outputs"):
      documented = {k: [v["dtype"], v["shape"]] for k, v in sig[kind].items()}
      assert documented == report["specs"][name][kind], (name, kind)


def test_existing_out_is_refused_unless_overwrite(run, tmp_path):
  out = str(tmp_path / "again")
  os.makedirs(out)
  # A directory the tool did not write is never replaced, so --overwrite is not suggested.
  with pytest.raises(WorkdirError, match="is not an export written by") as refused:
    export.export(run["workdir"], out, overwrite=True)
  assert "Choose another --out" in str(refused.value)
  os.rmdir(out)
  export.export(run["workdir"], out, step=40)
  with pytest.raises(WorkdirError, match="already holds an export; pass --overwrite"):
    export.export(run["workdir"], out)
  info = export.export(run["workdir"], out, step=20, overwrite=True)
  assert info["source"]["step"] == 20
  assert os.path.exists(os.path.join(out, "saved_model.pb"))
  assert json.load(open(os.path.join(out, "vae_export.json")))["source"]["step"] == 20


def test_no_checkpoint_is_a_clear_error(run, tmp_path):
  empty = tmp_path / "no_checkpoint"
  empty.mkdir()
  (empty / "config.json").write_text(open(os.path.join(run["workdir"], "config.json")).read())
  with pytest.raises(trained_run.NoCheckpointError, match="no committed checkpoint"):
    export.export(str(empty), str(tmp_path / "x"))
  assert not os.path.exists(tmp_path / "x")


# A fresh interpreter feeds wrong shapes; each call must raise, never end the process.
_BAD_SHAPES = r"""
import json, sys
import numpy as np
import tensorflow as tf

m = tf.saved_model.load(sys.argv[1])
results = {}
for label, name, kwargs in (
    ("unbatched image", "encode", {"images": np.zeros([28, 28, 1], np.float32)}),
    ("three channels", "reconstruct", {"images": np.zeros([2, 28, 28, 3], np.float32)}),
    ("wrong size", "encode", {"images": np.zeros([1, 32, 32, 1], np.float32)}),
    ("latent of 3", "decode", {"z": np.zeros([4, 3], np.float32)}),
):
  try:
    m.signatures[name](**{k: tf.constant(v) for k, v in kwargs.items()})
    results[label] = "accepted"
  except tf.errors.InvalidArgumentError as e:
    results[label] = e.message
good = m.signatures["encode"](images=tf.zeros([1, 28, 28, 1]))["mean"].shape.as_list()
print(json.dumps({"results": results, "good": good}))
"""


def test_a_wrong_input_shape_is_an_error_not_an_abort(exported):
  proc = subprocess.run([sys.executable, "-c", _BAD_SHAPES, exported], env=cli.env(),
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["good"] == [1, 2]  # The process lives on and still answers a right shape.
  results = out["results"]
  for label in ("unbatched image", "three channels", "wrong size"):
    assert "images must be float32 [N, 28, 28, 1]" in results[label], (label, results[label])
  assert "got shape" in results["unbatched image"] and "[28 28 1]" in results["unbatched image"]
  assert "[2 28 28 3]" in results["three channels"]  # The whole shape given.
  assert "z must be float32 [N, 2]" in results["latent of 3"]


def test_readme_states_the_preprocessing_of_the_run(exported):
  readme = open(os.path.join(exported, "README.md")).read()
  # The tutorial recipe (configs/mnist.py) thresholds at 0.5.
  assert "Binarise at 0.5" in readme and "`x = (x > 0.5).astype('float32')`" in readme
  assert "x = pixels.astype('float32') / 255" in readme
  assert "[1, 28, 28, 1]" in readme

"""A trained run as a SavedModel: python -m vae_dist.export --workdir=DIR --out=EXPORT_DIR.

The SavedModel needs TensorFlow only (no vae_dist, no Keras code of ours):

  m = tf.saved_model.load(EXPORT_DIR)
  m.signatures["encode"](images=x)           # or m.encode(x), the same tf.function
  m.signatures["sample"](num_samples=tf.constant(16), seed=tf.constant([1, 2], tf.int64),
                         temperature=tf.constant(1.0))

Signatures (S = image size, C = channels, L = latent_dim; all in EXPORT_DIR/vae_export.json):

  encode(images)                 -> mean, logvar
  decode(z)                      -> image, logits
  sample(num_samples, seed, temperature) -> z, image, logits
  reconstruct(images)            -> image, logits, mean, logvar

  images       float32 [N, S, S, C], pixel values in [0, 1] (binary for runs trained on
               binarised data: threshold or sample them as the run's config.binarize did)
  mean         float32 [N, L], mean of q(z|x); unbounded
  logvar       float32 [N, L], log-variance of q(z|x); unbounded (the std is exp(logvar / 2))
  z            float32 [N, L], latent points; the prior is N(0, I)
  image        float32 [N, S, S, C] in [0, 1]: the mean of p(x|z), sigmoid(logits) (Bernoulli
               pixel probabilities, or the Gaussian likelihood's means)
  logits       float32 [N, S, S, C], unbounded: the decoder's output before the sigmoid
  num_samples  int32 scalar >= 0
  seed         int64 [2]: z = temperature * tf.random.stateless_normal([num_samples, L], seed,
               alg="philox"), the same on every machine
  temperature  float32 scalar >= 0

Inputs of another shape (e.g. one unbatched [S, S, C] image) raise InvalidArgumentError naming
the expected shape (see checked()). reconstruct decodes the posterior mean (z = mean), as
training's image summaries do. BatchNorm
layers use their moving statistics (inference mode) everywhere.

Next to saved_model.pb the export holds README.md (this table, for the run), vae_export.json
(signatures, shapes, dtypes and ranges as data; the source workdir and step) and config.json (the
run's config). The export is written to a temporary directory and renamed into place, so
EXPORT_DIR is never half-written. An existing EXPORT_DIR is replaced only with --overwrite and only
when it is an earlier export (vae_export.json, nothing else added); a workdir or any path inside a
run's managed files is refused (run_files.check_output).
"""
import datetime
import json
import os
import uuid
from typing import Optional

from absl import flags
from absl import logging
import ml_collections
import tensorflow as tf

import vae_dist
from vae_dist import cli  # The tools' shared flags and checks.
from vae_dist.errors import WorkdirError
from vae_dist import fileio
from vae_dist import run_files
from vae_dist.tools import trained_run

EXPORT_INFO_FILENAME = "vae_export.json"
README_FILENAME = "README.md"


def _tensor_doc(dtype: str, shape: list, values: str) -> dict:
  return {"dtype": dtype, "shape": shape, "values": values}


def signature_docs(config: ml_collections.ConfigDict) -> dict:
  """Inputs and outputs of every signature: dtype, shape (None = any size) and value range."""
  s, c, latent = config.image_size, config.channels, config.latent_dim
  images = _tensor_doc("float32", [None, s, s, c], "pixel values in [0, 1]")
  mean = _tensor_doc("float32", [None, latent], "mean of q(z|x), unbounded")
  logvar = _tensor_doc("float32", [None, latent],
                       "log-variance of q(z|x), unbounded; std = exp(logvar / 2)")
  z = _tensor_doc("float32", [None, latent], "latent points; the prior is N(0, I)")
  image = _tensor_doc("float32", [None, s, s, c],
                      "in [0, 1]: mean of p(x|z) = sigmoid(logits)")
  logits = _tensor_doc("float32", [None, s, s, c],
                       f"unbounded: decoder output before the sigmoid ({config.likelihood} "
                       "likelihood)")
  return {
      "encode": {
          "inputs": {"images": images},
          "outputs": {"mean": mean, "logvar": logvar},
          "doc": "The approximate posterior q(z|x) = N(mean, exp(logvar)).",
      },
      "decode": {
          "inputs": {"z": z},
          "outputs": {"image": image, "logits": logits},
          "doc": "The likelihood p(x|z): its mean image and the logits it is the sigmoid of.",
      },
      "sample": {
          "inputs": {
              "num_samples": _tensor_doc("int32", [], "number of samples N >= 0"),
              "seed": _tensor_doc("int64", [2], "stateless RNG seed"),
              "temperature": _tensor_doc("float32", [], ">= 0; 1 samples the prior"),
          },
          "outputs": {"z": z, "image": image, "logits": logits},
          "doc": ("Prior samples: z = temperature * tf.random.stateless_normal([num_samples, "
                  f"{latent}], seed, alg='philox'), decoded."),
      },
      "reconstruct": {
          "inputs": {"images": images},
          "outputs": {"image": image, "logits": logits, "mean": mean, "logvar": logvar},
          "doc": "encode, then decode the posterior mean (z = mean).",
      },
  }


def checked(tensor, name: str, expected: list, what: str):
  """`tensor`, once it is known to have the shape `expected` (None = any size); else the call
  fails with InvalidArgumentError naming the expected and the given shape.

  The signatures' TensorSpecs alone do not stop a wrong shape: a loaded signature runs whatever
  it is given, and one unbatched [S, S, C] image reached oneDNN's convolution, whose failed check
  ends the process. The check compares the shape as text ("7x28x28x1" against
  "[0-9]+x28x28x1"): it works for any rank, and since the batch size is not known when the
  graph is built, no graph optimisation can fold it away.
  """
  pattern = "x".join("[0-9]+" if d is None else str(d) for d in expected)
  shown = "[" + ", ".join("N" if d is None else str(d) for d in expected) + "]"
  given = tf.strings.reduce_join(tf.strings.as_string(tf.shape(tensor)), separator="x")
  ok = tf.strings.regex_full_match(given, pattern)
  check = tf.debugging.Assert(
      ok, [f"{name} must be float32 {shown} ({what}); got shape", tf.shape(tensor)],
      summarize=8, name=f"check_{name}_shape")  # The whole shape, not its first 3 numbers.
  with tf.control_dependencies([check]):
    return tf.identity(tensor)


class VaeModule(tf.Module):
  """The run's VAE behind four tf.functions with fixed input signatures and checked shapes."""

  def __init__(self, model, config: ml_collections.ConfigDict):
    super().__init__(name="vae")
    self.model = model  # Tracked: its variables are saved with the module.
    s, c, latent = config.image_size, config.channels, config.latent_dim
    self.latent_dim = latent
    self.image_shape = [None, s, s, c]
    self.image_what = (f"a batch of {s}x{s}x{c} images; one image x is x[None]")
    images = tf.TensorSpec([None, s, s, c], tf.float32, name="images")
    self.encode = tf.function(self._encode, input_signature=[images])
    self.decode = tf.function(
        self._decode, input_signature=[tf.TensorSpec([None, latent], tf.float32, name="z")])
    self.sample = tf.function(self._sample, input_signature=[
        tf.TensorSpec([], tf.int32, name="num_samples"),
        tf.TensorSpec([2], tf.int64, name="seed"),
        tf.TensorSpec([], tf.float32, name="temperature"),
    ])
    self.reconstruct = tf.function(self._reconstruct, input_signature=[images])

  def _encode(self, images):
    images = checked(images, "images", self.image_shape, self.image_what)
    mean, logvar = self.model.encode(images, training=False)
    return {"mean": mean, "logvar": logvar}

  def _decode(self, z):
    z = checked(z, "z", [None, self.latent_dim], f"a batch of {self.latent_dim}-D latent points")
    logits = self.model.decode(z, training=False)
    return {"image": tf.sigmoid(logits), "logits": logits}

  def _sample(self, num_samples, seed, temperature):
    eps = tf.random.stateless_normal(tf.stack([num_samples, self.latent_dim]), seed=seed,
                                     alg="philox")
    z = temperature * eps
    return dict(self._decode(z), z=z)

  def _reconstruct(self, images):
    posterior = self._encode(images)
    return dict(self._decode(posterior["mean"]), **posterior)

  def signatures(self) -> dict:
    return {name: getattr(self, name).get_concrete_function()
            for name in ("encode", "decode", "sample", "reconstruct")}


def preprocessing(source: dict) -> list:
  """README lines: how to turn a picture into the `images` input this run was trained on."""
  s, c = source["image_size"], source["channels"]
  steps = [
      f"1. Make it {s}x{s} pixels with {c} channel{'s' if c > 1 else ''} "
      f"({'grayscale' if c == 1 else 'RGB'}), as the run's data pipeline did (config.json: "
      "`crop`, `resize_method`).",
      "2. Scale the 8-bit pixels to [0, 1]: `x = pixels.astype('float32') / 255`.",
  ]
  binarize = source.get("binarize", "none")
  if binarize == "static":
    steps.append("3. Binarise at 0.5, as training did (`config.binarize = 'static'`, the "
                 "TensorFlow CVAE tutorial's recipe): `x = (x > 0.5).astype('float32')`. The "
                 "model has only seen 0s and 1s.")
  elif binarize == "dynamic":
    steps.append("3. Training binarised each pixel by a random draw (`config.binarize = "
                 "'dynamic'`: 1 with probability x). Feed such a draw, "
                 "`x = (np.random.uniform(size=x.shape) < x).astype('float32')`, or x itself "
                 "(its expected value).")
  else:
    steps.append("3. Nothing more: training fed these [0, 1] values (`config.binarize = "
                 "'none'`).")
  steps.append(f"4. Batch it: one image is `x[None]`, shape [1, {s}, {s}, {c}]. Any other shape "
               "is refused with an InvalidArgumentError naming the expected one.")
  return ["## Preprocessing: what `images` must be", ""] + steps + [""]


def readme(info: dict) -> str:
  """README.md of an export, from its vae_export.json contents."""
  src = info["source"]
  lines = [
      f"# VAE export: {src['dataset']} {src['image_size']}x{src['image_size']}x{src['channels']}, "
      f"latent {src['latent_dim']}",
      "",
      f"From `{src['workdir']}` at step {src['step']} (vae_dist {info['vae_dist_version']}, "
      f"TensorFlow {info['tensorflow_version']}). Needs TensorFlow only:",
      "",
      "```python",
      "import tensorflow as tf",
      "m = tf.saved_model.load(EXPORT_DIR)",
      "out = m.signatures['sample'](num_samples=tf.constant(16), "
      "seed=tf.constant([1, 2], tf.int64), temperature=tf.constant(1.0))",
      "out['image']  # float32 [16, S, S, C] in [0, 1]",
      "```",
      "",
      "Every signature takes keyword arguments and returns a dict. The same functions are also "
      "attributes of the loaded object (`m.encode(images)`, positional arguments in the order "
      "below). BatchNorm layers use their moving statistics.",
      "",
  ] + preprocessing(src)
  for name, sig in info["signatures"].items():
    lines += [f"## `{name}`", "", sig["doc"], "", "| | name | dtype | shape | values |",
              "| --- | --- | --- | --- | --- |"]
    for kind in ("inputs", "outputs"):
      for tensor, doc in sig[kind].items():
        shape = "[" + ", ".join("N" if d is None else str(d) for d in doc["shape"]) + "]"
        lines.append(f"| {kind[:-1]} | `{tensor}` | {doc['dtype']} | {shape} | {doc['values']} |")
    lines.append("")
  return "\n".join(lines)


# What an export directory holds: tf.saved_model.save's files and ours. --overwrite replaces a
# directory only when it holds vae_export.json and nothing else than these.
_EXPORT_ENTRIES = frozenset({"saved_model.pb", "variables", "assets", "fingerprint.pb",
                             EXPORT_INFO_FILENAME, README_FILENAME, "config.json"})


def _check_replaceable(given: str, out: str, overwrite: bool) -> None:
  """Refuses an existing `out` unless it is an export of ours and --overwrite was given.

  Raises:
    WorkdirError: `out` exists and is not only an export written by this tool, or is one and
      --overwrite was not given.
  """
  if not tf.io.gfile.exists(out):
    return
  if not tf.io.gfile.isdir(out) or not tf.io.gfile.exists(os.path.join(out, EXPORT_INFO_FILENAME)):
    raise WorkdirError(f"--out={given} exists and is not an export written by vae_dist.export "
                       f"(it has no {EXPORT_INFO_FILENAME}); --overwrite replaces only such "
                       "exports. Choose another --out.")
  others = sorted(set(n.rstrip("/") for n in tf.io.gfile.listdir(out)) - _EXPORT_ENTRIES)
  if others:
    raise WorkdirError(f"--out={given} is an export but also holds files an export does not "
                       f"write ({', '.join(others[:5])}); it is left as it is. Choose another "
                       "--out.")
  if not overwrite:
    raise WorkdirError(f"--out={given} already holds an export; pass --overwrite to replace it, "
                       "or choose another --out.")


def export(workdir: str, out: str, step: Optional[int] = None, *, overwrite: bool = False) -> dict:
  """Exports a run's model at `step` (default: the latest) as a SavedModel in `out`.

  Returns:
    The export's info (what vae_export.json holds).

  Raises:
    VaeDistError: missing workdir or checkpoint, or `out` exists (without overwrite) or cannot
      be written.
  """
  if not out:
    raise cli.UsageError("--out is required: the directory the SavedModel goes to.")
  given = out
  out = run_files.check_output(out.rstrip("/") or out, flag="--out")
  _check_replaceable(given, out, overwrite)
  run = trained_run.load(workdir, step)
  config = run.config
  module = VaeModule(run.model, config)
  info = {
      "format": "vae_dist SavedModel export, version 1",
      "source": {
          "workdir": workdir,
          "step": run.step,
          "checkpoint": run.prefix,
          "dataset": config.dataset,
          "image_size": config.image_size,
          "channels": config.channels,
          "latent_dim": config.latent_dim,
          "likelihood": config.likelihood,
          "binarize": config.binarize,
      },
      "signatures": signature_docs(config),
      "vae_dist_version": vae_dist.__version__,
      "tensorflow_version": tf.__version__,
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
  }
  tmp = f"{out}.tmp-{uuid.uuid4().hex[:8]}"
  try:
    tf.saved_model.save(module, tmp, signatures=module.signatures())
    fileio.write_text_atomic(os.path.join(tmp, EXPORT_INFO_FILENAME),
                             json.dumps(info, indent=2, sort_keys=False))
    fileio.write_text_atomic(os.path.join(tmp, README_FILENAME), readme(info))
    fileio.write_text_atomic(os.path.join(tmp, "config.json"),
                             config.to_json_best_effort(indent=2, sort_keys=True))
    if tf.io.gfile.exists(out):
      _check_replaceable(given, out, overwrite)  # Again: it may have changed while we worked.
      tf.io.gfile.rmtree(out)
    tf.io.gfile.rename(tmp, out)
  except (tf.errors.OpError, OSError) as e:
    raise WorkdirError(f"Cannot write the export to {out}: {e}") from e
  finally:
    if tf.io.gfile.exists(tmp):
      tf.io.gfile.rmtree(tmp)
  logging.info("Exported %s step %d to %s.", workdir, run.step, out)
  return info


def define_flags() -> None:
  cli.define_common_flags()
  flags.DEFINE_string("out", None, "Directory to write the SavedModel to (must not exist).")
  flags.DEFINE_bool("overwrite", False, "Replace an earlier export at --out (never anything "
                    "else).")


def main(argv):
  del argv
  f = flags.FLAGS
  cli.check_common_flags()
  info = export(f.workdir, f.out, f.step, overwrite=f.overwrite)
  print(f"Exported {f.workdir} step {info['source']['step']} to {f.out} (signatures "
        f"{', '.join(info['signatures'])}; see {os.path.join(f.out, README_FILENAME)}).",
        flush=True)


def run():
  """The vae-dist-export console script."""
  define_flags()
  cli.run(main, required=("workdir", "out"), description=__doc__)


if __name__ == "__main__":
  run()

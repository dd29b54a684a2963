"""Pictures from a trained run: python -m vae_dist.generate --workdir=DIR --what=WHAT [--out=FILE].

  --what=samples          decoded prior samples z ~ N(0, T^2 I) (--num, --temperature, --seed)
  --what=reconstructions  test images (top row) above their reconstructions (--num or --indices)
  --what=manifold         decoded --grid x --grid quantile grid of N(0, 1) over two latent
                          dimensions (--dims, others 0; --quantiles, default 0.05,0.95 as in the
                          TensorFlow CVAE tutorial: row i has z[dims[1]] = q_i, column j has
                          z[dims[0]] = q_j)
  --what=interpolation    two test images (--indices=A,B) at the ends, --steps decodes between
                          their latent means (--interpolation=linear|spherical)
  --what=scatter          test latent means coloured by label (or --color_by=ATTRIBUTE); the first
                          two principal components when latent_dim > 2 (a --size_inches x
                          --size_inches figure at --dpi: 600 x 600 pixels by default)
  --what=attribute        concept vector v of --attribute (e.g. Sandal, 5, hair=3, glasses,
                          Smiling; see vae_dist/tools/concepts.py), applied to test images (--indices):
                          each row is the image, then decodes of z + alpha * v for --alphas
  --what=gif              an animated GIF of prior samples through training: one frame per
                          committed checkpoint, the same noise in every frame, captioned with its
                          step

Images are the likelihood's mean (sigmoid of the decoder output). --step picks a checkpoint
(default: the latest; --what=gif uses them all). --out defaults to
<workdir>/generated/<what>_step<step>.png (.gif). Concept vectors are saved to
<workdir>/concept_vectors/step_<step>/<name>.npy with <name>.json (counts, split, norm) and reused.

Pictures are drawn by vae_dist/viz/pictures.py, as TensorBoard's are: each image enlarged by an
integer factor (nearest neighbour) to at least 64 pixels high while the picture stays within 1600
pixels, 2-pixel white lines between images (none for the manifold), and labels: reconstructions'
rows (original, reconstruction) and test indices, interpolation's t, attribute's alphas, the
manifold's latent values. --zoom=N enlarges the result N times more. Layout: samples
ceil(sqrt(num)) columns; reconstructions 2 rows x num; interpolation 1 row x (steps + 2);
attribute len(indices) rows x (1 + len(alphas)). A GIF of a run with one checkpoint warns that it
has one frame.
"""
import dataclasses
import os
from typing import Optional, Sequence

from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf

from vae_dist.tools import concepts
from vae_dist.data import sources
from vae_dist import fileio
from vae_dist import image_files
from vae_dist import image_grid
from vae_dist import latent_paths
from vae_dist import run_files
from vae_dist.data import split_examples
from vae_dist import cli as tool_cli  # The tools' shared flags and checks.
from vae_dist.tools import trained_run
from vae_dist.errors import DamagedCheckpointError
from vae_dist.viz import pictures
from vae_dist.cli import UsageError

WHATS = ("samples", "reconstructions", "manifold", "interpolation", "scatter", "attribute", "gif")
_BATCH = 128


@dataclasses.dataclass
class Options:
  """Everything a picture can be tuned with; the defaults are the command line's."""
  num: int = 0  # samples/gif: 64; reconstructions: 8.
  seed: int = 0
  temperature: float = 1.0
  indices: Sequence[int] = ()  # Test examples; defaults depend on `what`.
  grid: int = 20
  quantiles: tuple = (0.05, 0.95)
  dims: tuple = (0, 1)
  interpolation: str = "linear"
  steps: int = 10
  attribute: str = ""
  alphas: Sequence[float] = (-2.0, -1.0, 0.0, 1.0, 2.0)
  vector_split: str = ""  # '' = the run's train split.
  max_examples: int = -1  # Examples for concept vectors and scatter plots; -1: the whole split.
  recompute: bool = False
  color_by: str = "label"
  zoom: int = 1
  frame_ms: int = 500
  dpi: int = 100
  size_inches: float = 6.0


def _check_out_file(out: str) -> None:
  """--out must be a file outside every run's managed files, and not a directory."""
  run_files.check_output(out, flag="--out")
  if tf.io.gfile.isdir(out):
    raise UsageError(f"--out={out} is a directory; name the file to write.")


# Limits that keep a picture within what a PNG viewer (and this machine's memory) can take: a
# 100 x 100 manifold of 256 x 256 images is already 25,600 x 25,600 pixels.
MAX_IMAGES = 10_000
MAX_GRID = 100
MAX_ZOOM = 32
MAX_SIDE_PIXELS = 20_000


def check_options(opts: Options) -> None:
  """Refuses every picture option out of range before the run is loaded.

  Raises:
    UsageError: naming the flag, its value and the range.
  """
  check = tool_cli.check_range
  check("num", opts.num, 1, MAX_IMAGES, allow=(0,))
  check("seed", opts.seed, 0, tool_cli.MAX_SEED)
  check("temperature", opts.temperature, 0.0, 1e3)
  for index in opts.indices:
    check("indices", index, 0, why="indices count from 0")
  if len(opts.indices) > MAX_IMAGES:
    raise UsageError(f"--indices lists {len(opts.indices)} examples; at most {MAX_IMAGES}.")
  check("grid", opts.grid, 1, MAX_GRID)
  for q in opts.quantiles:
    check("quantiles", q, 0.0, 1.0)
  check("steps", opts.steps, 2, 1_000)
  for alpha in opts.alphas:
    check("alphas", alpha, -1e3, 1e3)
  if len(opts.alphas) > 100:
    raise UsageError(f"--alphas lists {len(opts.alphas)} values; at most 100.")
  check("max_examples", opts.max_examples, 1, allow=(-1,), why="-1 uses the whole split")
  check("zoom", opts.zoom, 1, MAX_ZOOM)
  check("frame_ms", opts.frame_ms, 10, 60_000, why="GIF frames last at least 10 ms")
  check("dpi", opts.dpi, 10, 1_000)
  check("size_inches", opts.size_inches, 0.5, 100.0)
  side = opts.size_inches * opts.dpi
  if side > MAX_SIDE_PIXELS:
    raise UsageError(f"--size_inches={opts.size_inches} at --dpi={opts.dpi} is a {side:.0f}-pixel "
                     f"square; at most {MAX_SIDE_PIXELS}.")


def default_out(workdir: str, what: str, step: int) -> str:
  name = "progress.gif" if what == "gif" else f"{what}_step{step}.png"
  return os.path.join(workdir, "generated", name)


# ---- model helpers ------------------------------------------------------------------------------


def decode_images(model, z) -> np.ndarray:
  """Mean images sigmoid(decoder(z)) for [N, L] latents, in batches: [N, S, S, C] in [0, 1]."""
  z = np.asarray(z, np.float32)
  out = [tf.sigmoid(model.decode(tf.constant(z[i:i + _BATCH]))).numpy()
         for i in range(0, len(z), _BATCH)]
  return np.concatenate(out, axis=0)


def encode_means(model, images) -> np.ndarray:
  """Posterior means [N, L] of images [N, S, S, C]."""
  images = np.asarray(images, np.float32)
  out = [model.encode(tf.constant(images[i:i + _BATCH]))[0].numpy()
         for i in range(0, len(images), _BATCH)]
  return np.concatenate(out, axis=0)


def eval_examples(builder, config, indices) -> dict:
  """The eval split's examples at `indices` (see split_examples.take)."""
  try:
    return split_examples.take(builder, config, config.eval_split, indices)
  except IndexError as e:
    raise UsageError(f"--indices: {e}.") from None


def _indices(opts: Options, default: Sequence[int], builder, config,
             count: Optional[int] = None) -> list:
  """--indices, or the default ones that exist in the (maybe tiny) eval split."""
  if opts.indices:
    indices = list(opts.indices)
  else:
    size = split_examples.num_examples(builder, config, config.eval_split)
    indices = [i for i in default if i < size]
  if count is not None and len(indices) != count:
    raise UsageError(f"--indices needs exactly {count} test example indices, got {indices}.")
  if not indices:
    raise UsageError(f"split '{config.eval_split}' has no example to show.")
  return indices


# ---- the pictures -------------------------------------------------------------------------------


def samples(run, opts: Options) -> pictures.Picture:
  num = opts.num or 64
  z = latent_paths.prior_noise(num, run.config.latent_dim, opts.seed, opts.temperature)
  return pictures.samples(decode_images(run.model, z))


def reconstructions(run, opts: Options, builder) -> pictures.Picture:
  indices = _indices(opts, range(opts.num or 8), builder, run.config)
  images = eval_examples(builder, run.config, indices)["image"]
  recon = decode_images(run.model, encode_means(run.model, images))
  return pictures.reconstructions(images, recon, indices)


def manifold(run, opts: Options) -> pictures.Picture:
  latent_dim = run.config.latent_dim
  dims = tuple(opts.dims)
  if latent_dim > 1 and (len(dims) != 2 or len(set(dims)) != 2 or
                         not all(0 <= d < latent_dim for d in dims)):
    raise UsageError(f"--dims={','.join(map(str, dims))}: need two different latent dimensions "
                     f"in 0..{latent_dim - 1}.")
  if opts.grid < 1:
    raise UsageError(f"--grid must be at least 1, got {opts.grid}.")
  low, high = opts.quantiles
  try:
    z = latent_paths.manifold_grid(opts.grid, latent_dim, dims, low, high)
  except ValueError as e:
    raise UsageError(f"--quantiles: {e}.") from None
  q = latent_paths.normal_quantiles(opts.grid, low, high)
  return pictures.manifold(decode_images(run.model, z), opts.grid, col_values=q,
                           row_values=q if latent_dim > 1 else None, dims=dims)


def interpolation(run, opts: Options, builder) -> pictures.Picture:
  a, b = _indices(opts, (0, 1), builder, run.config, count=2)
  images = eval_examples(builder, run.config, [a, b])["image"]
  za, zb = encode_means(run.model, images)
  if opts.steps < 2:
    raise UsageError(f"--steps must be at least 2, got {opts.steps}.")
  ts = np.linspace(0.0, 1.0, opts.steps)
  if opts.interpolation == "linear":
    z = latent_paths.lerp(za, zb, ts)
  elif opts.interpolation == "spherical":
    z = latent_paths.slerp(za, zb, ts)
  else:
    raise UsageError(f"--interpolation={opts.interpolation!r}: use linear or spherical.")
  return pictures.interpolation(images[0], decode_images(run.model, z), images[1], ts,
                                ends=(a, b))


def latents_and_features(run, builder, split, max_examples):
  """Posterior means of a split's examples with their labels and attributes."""
  means, batches = [], []
  for batch in split_examples.iter_batches(builder, run.config, split, limit=max_examples):
    means.append(encode_means(run.model, batch.pop("image")))
    batches.append(batch)
  return np.concatenate(means, axis=0), split_examples.concat(batches)


def scatter(run, opts: Options, builder) -> bytes:
  config = run.config
  label_names = sources.label_names(builder)
  attributes = sources.attribute_features(builder)
  color_by = opts.color_by
  if color_by != concepts.LABEL and color_by not in attributes:
    known = ", ".join(["label"] + sorted(attributes))
    raise concepts.AttributeSpecError(f"--color_by={color_by!r}: use one of {known}.")
  means, features = latents_and_features(run, builder, config.eval_split, opts.max_examples)
  if color_by == concepts.LABEL:
    values = features.get(concepts.LABEL)
    names = label_names
  else:
    values = features["attributes"][color_by]
    names = attributes[color_by]
  dim = config.latent_dim
  title = (f"{config.dataset} {config.eval_split}: posterior means, step {run.step}" +
           (f" (PCA of {dim}-D)" if dim > 2 else ""))
  return _plots().scatter_png(means, values, names, title=title, legend_title=color_by,
                              size_inches=opts.size_inches, dpi=opts.dpi)


def _plots():
  from vae_dist import plots  # pylint: disable=g-import-not-at-top  # matplotlib is slow to load.
  return plots


def concept_vector(run, opts: Options, builder) -> concepts.ConceptVector:
  """The run's concept vector for opts.attribute at run.step: loaded when saved, else computed."""
  config = run.config
  if not opts.attribute:
    raise UsageError("--what=attribute needs --attribute, e.g. --attribute=Sandal, "
                     "--attribute=hair=3 or --attribute=Smiling.")
  spec = opts.attribute
  selector = concepts.parse(spec, sources.label_names(builder),
                            sources.attribute_features(builder))
  split = opts.vector_split or config.train_split
  if split not in builder.info.splits:
    raise UsageError(f"--vector_split={split!r}: the data set's splits are "
                     f"{', '.join(builder.info.splits)}.")
  # Labels and attributes alone are read fast: check them before encoding the split.
  features = split_examples.concat(list(split_examples.iter_batches(
      builder, config, split, limit=opts.max_examples, with_images=False)))
  values = concepts.feature_values(features, selector.feature)
  concepts.select(values, selector, spec=spec, split=split)
  if not opts.recompute:
    saved = concepts.load_saved(run.workdir, run.step, spec, split=split, examples=len(values))
    if saved is not None:
      logging.info("Reusing the concept vector of %r saved at step %d.", spec, run.step)
      return saved
  means, features = latents_and_features(run, builder, split, opts.max_examples)
  concept = concepts.compute(means, concepts.feature_values(features, selector.feature),
                             selector, spec=spec, split=split)
  npy, _ = concepts.save(run.workdir, run.step, concept)
  logging.info("Saved the concept vector of %r (%s) to %s: %d with, %d without, norm %.3f.",
               spec, selector.description, npy, concept.info["positives"],
               concept.info["negatives"], concept.info["norm"])
  return concept


def attribute(run, opts: Options, builder) -> tuple:
  concept = concept_vector(run, opts, builder)
  indices = _indices(opts, (0, 1, 2, 3), builder, run.config)
  images = eval_examples(builder, run.config, indices)["image"]
  z = encode_means(run.model, images)
  alphas = np.asarray(opts.alphas, np.float32)
  if not len(alphas):
    raise UsageError("--alphas needs at least one value.")
  shifted = z[:, None, :] + alphas[None, :, None] * concept.vector[None, None, :]
  decoded = decode_images(run.model, shifted.reshape(-1, z.shape[1]))
  decoded = decoded.reshape(len(images), len(alphas), *decoded.shape[1:])
  return pictures.attribute(images, decoded, alphas, indices), concept


def gif_frames(run, opts: Options) -> list:
  """One captioned frame of decoded fixed prior noise per committed checkpoint, oldest first."""
  num = opts.num or 64
  z = latent_paths.prior_noise(num, run.config.latent_dim, opts.seed, opts.temperature)
  frames = []
  for step in trained_run.committed_steps(run.workdir):
    try:
      run.restore(step)
    except (DamagedCheckpointError, trained_run.NoCheckpointError) as e:
      # One frame less beats no GIF: the step is damaged, or retention deleted it meanwhile.
      logging.warning("No frame for step %d: %s", step, e)
      continue
    grid = pictures.samples(decode_images(run.model, z)).pixels
    frames.append(image_files.with_caption(
        image_files.to_pil(image_grid.zoom(grid, opts.zoom)), f"step {step}"))
  return frames


# ---- entry point --------------------------------------------------------------------------------


def generate(workdir: str, what: str, out: Optional[str] = None, step: Optional[int] = None,
             opts: Optional[Options] = None, overrides: Optional[dict] = None) -> dict:
  """Writes one picture of a trained run.

  Args:
    workdir: the run's workdir.
    what: one of WHATS.
    out: the file to write; default: default_out(workdir, what, step).
    step: the checkpoint; default: the latest committed one.
    opts: picture options.
    overrides: config fields to replace (e.g. data_dir).

  Returns:
    {'out': path, 'what', 'step', 'width', 'height'} (and 'frames' for gif, 'concept' for
    attribute: the vector's JSON).

  Raises:
    VaeDistError: missing workdir or checkpoint, unknown attribute, bad options, missing data.
  """
  opts = opts or Options()
  if what not in WHATS:
    raise UsageError(f"--what={what!r}: use one of {', '.join(WHATS)}.")
  check_options(opts)
  if out:
    want = ".gif" if what == "gif" else ".png"
    if not out.lower().endswith(want):
      raise UsageError(f"--out={out}: --what={what} writes a {want[1:].upper()} file; name it "
                       f"*{want}.")
  if out:
    _check_out_file(out)
  run = trained_run.load(workdir, step, overrides=overrides)
  out = out or default_out(workdir, what, run.step)
  summary = {"what": what, "step": run.step, "out": out}
  if what == "gif":
    frames = gif_frames(run, opts)
    if not frames:
      raise DamagedCheckpointError(f"{workdir}: no committed checkpoint could be restored; "
                                   "the GIF would have no frame.")
    if len(frames) == 1:
      logging.warning("The GIF has one frame (step %s): it does not move. It needs a run with "
                      "several committed checkpoints (config.checkpoint_every_steps, "
                      "config.max_to_keep).", trained_run.committed_steps(workdir))
    image_files.write_gif(out, frames, opts.frame_ms)
    summary.update(width=frames[0].width, height=frames[0].height, frames=len(frames),
                   steps=trained_run.committed_steps(workdir))
    return summary
  if what == "scatter":
    png = scatter(run, opts, sources.load_builder(run.config))
    fileio.write_bytes_atomic(out, png)
    side = int(round(opts.size_inches * opts.dpi))
    summary.update(width=side, height=side)
    return summary
  if what == "samples":
    picture = samples(run, opts)
  elif what == "manifold":
    picture = manifold(run, opts)
  else:
    builder = sources.load_builder(run.config)
    if what == "reconstructions":
      picture = reconstructions(run, opts, builder)
    elif what == "interpolation":
      picture = interpolation(run, opts, builder)
    else:
      picture, concept = attribute(run, opts, builder)
      summary["concept"] = concept.info
  picture = picture.pixels
  if max(picture.shape[:2]) * opts.zoom > MAX_SIDE_PIXELS:
    raise UsageError(f"--zoom={opts.zoom} makes a {picture.shape[1] * opts.zoom} x "
                     f"{picture.shape[0] * opts.zoom} picture; at most {MAX_SIDE_PIXELS} pixels "
                     "a side. Use a smaller --zoom.")
  width, height = image_files.write_png(out, image_grid.zoom(picture, opts.zoom))
  summary.update(width=width, height=height)
  return summary


def define_flags() -> None:
  tool_cli.define_common_flags()
  flags.DEFINE_enum("what", None, WHATS, "What to draw.")
  flags.DEFINE_string("out", None, "PNG (or GIF) to write; default "
                      "<workdir>/generated/<what>_step<step>.png.")
  flags.DEFINE_integer("num", 0, "Samples (default 64) or reconstructions (default 8).")
  flags.DEFINE_integer("seed", 0, "Seed of the prior noise (samples, gif).")
  flags.DEFINE_float("temperature", 1.0, "Prior samples are z = temperature * N(0, I).")
  flags.DEFINE_string("indices", "", "Comma-separated test example indices (reconstructions, "
                      "interpolation: two, attribute).")
  flags.DEFINE_integer("grid", 20, "Manifold: images per side.")
  flags.DEFINE_string("quantiles", "0.05,0.95", "Manifold: lowest and highest N(0, 1) quantile.")
  flags.DEFINE_string("dims", "0,1", "Manifold: the two latent dimensions varied (others 0).")
  flags.DEFINE_enum("interpolation", "linear", ["linear", "spherical"], "Interpolation path.")
  flags.DEFINE_integer("steps", 10, "Interpolation: decoded points from A to B (inclusive).")
  flags.DEFINE_string("attribute", "", "Attribute: Sandal, 5, label=5, hair=3, hair!=3, glasses, "
                      "Smiling, ...")
  flags.DEFINE_string("alphas", "-2,-1,0,1,2", "Attribute: the alphas of z + alpha * v.")
  flags.DEFINE_string("vector_split", "", "Attribute: split the concept vector is computed on "
                      "(default: the run's train split).")
  flags.DEFINE_integer("max_examples", -1, "Attribute and scatter: use only the first N examples "
                       "of the split (-1: all).")
  flags.DEFINE_bool("recompute", False, "Attribute: recompute the concept vector even if saved.")
  flags.DEFINE_string("color_by", "label", "Scatter: 'label' or an attribute name.")
  flags.DEFINE_integer("zoom", 1, "Enlarge PNG/GIF pictures N times (nearest neighbour).")
  flags.DEFINE_integer("frame_ms", 500, "GIF: milliseconds per frame.")
  flags.DEFINE_integer("dpi", 100, "Scatter: dots per inch.")
  flags.DEFINE_float("size_inches", 6.0, "Scatter: width and height of the figure.")


def _options_from_flags() -> Options:
  f = flags.FLAGS
  quantiles = tool_cli.parse_list(f.quantiles, float, "quantiles")
  if len(quantiles) != 2:
    raise UsageError(f"--quantiles needs two values, low and high; got {f.quantiles!r}.")
  return Options(
      num=f.num, seed=f.seed, temperature=f.temperature,
      indices=tool_cli.parse_list(f.indices, int, "indices"), grid=f.grid,
      quantiles=tuple(quantiles), dims=tuple(tool_cli.parse_list(f.dims, int, "dims")),
      interpolation=f.interpolation, steps=f.steps, attribute=f.attribute,
      alphas=tool_cli.parse_list(f.alphas, float, "alphas"), vector_split=f.vector_split,
      max_examples=f.max_examples, recompute=f.recompute, color_by=f.color_by, zoom=f.zoom,
      frame_ms=f.frame_ms, dpi=f.dpi, size_inches=f.size_inches)


def main(argv):
  del argv
  f = flags.FLAGS
  tool_cli.check_common_flags()
  summary = generate(f.workdir, f.what, f.out, f.step, _options_from_flags(),
                     tool_cli.data_overrides())
  extra = f", {summary['frames']} frames (steps {summary['steps']})" if "frames" in summary else ""
  print(f"Wrote {summary['out']} ({summary['width']}x{summary['height']}): {summary['what']} "
        f"at step {summary['step']}{extra}.", flush=True)
  if "concept" in summary:
    c = summary["concept"]
    print(f"  concept vector {c['spec']!r} ({c['description']}): {c['positives']} with, "
          f"{c['negatives']} without, of {c['examples']} examples of split '{c['split']}'; "
          f"norm {c['norm']:.3f}", flush=True)


def run():
  """The vae-dist-generate console script."""
  define_flags()
  flags.mark_flags_as_required(["what"])
  tool_cli.run(main, description=__doc__)


if __name__ == "__main__":
  run()

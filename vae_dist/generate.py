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
from typing import Optional

from absl import flags
from absl import logging
import tensorflow as tf

from vae_dist import cli  # The tools' shared flags and checks.
from vae_dist.data import sources
from vae_dist.errors import DamagedCheckpointError
from vae_dist.errors import UsageError
from vae_dist import fileio
from vae_dist import run_files
from vae_dist.tools import drawings
from vae_dist.tools import trained_run
from vae_dist.viz import image_files
from vae_dist.viz import image_grid

WHATS = ("samples", "reconstructions", "manifold", "interpolation", "scatter", "attribute", "gif")


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


def check_options(opts: drawings.Options) -> None:
  """Refuses every picture option out of range before the run is loaded.

  Raises:
    UsageError: naming the flag, its value and the range.
  """
  check = cli.check_range
  check("num", opts.num, 1, MAX_IMAGES, allow=(0,))
  check("seed", opts.seed, 0, cli.MAX_SEED)
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
  return run_files.RunDir(workdir).generated(name)


# ---- entry point --------------------------------------------------------------------------------


def generate(workdir: str, what: str, out: Optional[str] = None, step: Optional[int] = None,
             opts: Optional[drawings.Options] = None, overrides: Optional[dict] = None) -> dict:
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
  opts = opts or drawings.Options()
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
    frames = drawings.gif_frames(run, opts)
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
    png = drawings.scatter(run, opts, sources.load_builder(run.config))
    fileio.write_bytes_atomic(out, png)
    side = int(round(opts.size_inches * opts.dpi))
    summary.update(width=side, height=side)
    return summary
  if what == "samples":
    picture = drawings.samples(run, opts)
  elif what == "manifold":
    picture = drawings.manifold(run, opts)
  else:
    builder = sources.load_builder(run.config)
    if what == "reconstructions":
      picture = drawings.reconstructions(run, opts, builder)
    elif what == "interpolation":
      picture = drawings.interpolation(run, opts, builder)
    else:
      picture, concept = drawings.attribute(run, opts, builder)
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
  cli.define_common_flags()
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


# Options given on the command line as comma-separated lists: name -> item type.
_LIST_OPTIONS = {"indices": int, "quantiles": float, "dims": int, "alphas": float}


def _options_from_flags() -> drawings.Options:
  """drawings.Options from the flags of the same names (every field is a flag)."""
  f = flags.FLAGS
  values = {}
  for field in dataclasses.fields(drawings.Options):
    value = f[field.name].value
    if field.name in _LIST_OPTIONS:
      value = tuple(cli.parse_list(value, _LIST_OPTIONS[field.name], field.name))
    values[field.name] = value
  if len(values["quantiles"]) != 2:
    raise UsageError(f"--quantiles needs two values, low and high; got {f.quantiles!r}.")
  return drawings.Options(**values)


def main(argv):
  del argv
  f = flags.FLAGS
  cli.check_common_flags()
  summary = generate(f.workdir, f.what, f.out, f.step, _options_from_flags(),
                     cli.data_overrides())
  extra = ""
  if "frames" in summary:
    count = summary["frames"]
    extra = f", {count} frame{'s' if count != 1 else ''} (steps {summary['steps']})"
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
  cli.run(main, description=__doc__)


if __name__ == "__main__":
  run()

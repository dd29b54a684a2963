"""What `generate` draws from a trained run: its options, and one function per picture.

Each function takes the loaded run (tools/trained_run.py) and returns a viz.pictures.Picture
(scatter: PNG bytes; gif: frames), so generate.py only checks options and writes files.
"""
import dataclasses
from typing import Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from vae_dist.data import sources
from vae_dist.data import split_examples
from vae_dist.errors import DamagedCheckpointError
from vae_dist.errors import UsageError
from vae_dist.model import latent_paths
from vae_dist.tools import concepts
from vae_dist.tools import trained_run
from vae_dist.viz import image_files
from vae_dist.viz import image_grid
from vae_dist.viz import pictures

_BATCH = 128  # Images encoded or decoded at a time.

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
  from vae_dist.viz import plots  # pylint: disable=g-import-not-at-top  # matplotlib is slow to load.
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

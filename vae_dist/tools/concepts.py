"""Concept vectors (the "smile vector"): mean latent with an attribute minus mean latent without.

An attribute is named by a spec string, matched against what the data set has:

  Sandal, 5, label=Sandal, label=5  a class of the 'label' feature (Fashion-MNIST, image folders),
                                    by name or index; the others are the negatives
  Smiling, Smiling=True             a boolean attribute (CelebA): True against False
  hair=3, glasses=11                a categorical attribute (Cartoon Set) equal to a variant
  hair!=3                           ... different from it
  glasses                           a categorical attribute that is not its default variant, the
                                    default being the variant most examples of the split have
                                    (for Cartoon Set glasses: no glasses)

Names match exactly first, then ignoring case. The vector of a run at one step is saved as
`<workdir>/concept_vectors/step_<step>/<name>.npy` with `<name>.json` next to it (spec, split,
example counts, norm), and reused when asked again with the same split and example limit.
"""
import dataclasses
import datetime
import io
import json
import os
import re
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from vae_dist.errors import VaeDistError
from vae_dist import fileio

VECTORS_SUBDIR = "concept_vectors"
LABEL = "label"


class AttributeSpecError(VaeDistError):
  """The attribute spec names nothing the data set has."""


class NoExamplesError(VaeDistError):
  """The attribute selects no example (or every example) of the split."""


@dataclasses.dataclass(frozen=True)
class Selector:
  """Which feature to compare, how, and a readable description."""
  feature: str  # 'label' or an attribute name.
  op: str  # '==', '!=' or 'not_mode' (different from the most common value).
  value: Optional[int]
  description: str

  def resolved(self, values: np.ndarray) -> "Selector":
    """This selector with 'not its most common variant' turned into '!= <that variant>'."""
    values = np.asarray(values)
    if self.op != "not_mode" or len(values) == 0:
      return self
    mode = int(np.bincount(values.astype(np.int64)).argmax())
    return Selector(self.feature, "!=", mode,
                    f"{self.feature}!={mode} (its most common variant)")

  def positives(self, values: np.ndarray) -> np.ndarray:
    """Boolean mask of the examples having the attribute, from the feature's values."""
    values = np.asarray(values)
    selector = self.resolved(values)
    if selector.op == "==":
      return values == selector.value
    if selector.op == "!=":
      return values != selector.value
    return np.zeros([len(values)], bool)


def file_name(spec: str) -> str:
  """A file-name-safe form of a spec: 'hair=3' -> 'hair=3', 'T-shirt/top' -> 'T-shirt_top'."""
  name = spec.strip().replace("!=", "_not=")
  return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name).strip("_") or "attribute"


def _match(name: str, choices: Sequence[str]) -> Optional[str]:
  if name in choices:
    return name
  lowered = [c for c in choices if c.lower() == name.lower()]
  return lowered[0] if len(lowered) == 1 else None


def _class_index(value: str, names: Sequence[str], what: str) -> int:
  """A class given by name or by index."""
  found = _match(value, names)
  if found is not None:
    return list(names).index(found)
  if re.fullmatch(r"\d+", value) and int(value) < len(names):
    return int(value)
  shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
  raise AttributeSpecError(f"{what} has no class {value!r}; its classes are {shown} (or their "
                           f"indices 0..{len(names) - 1}).")


def parse(spec: str, label_names: Optional[Sequence[str]], attributes: dict) -> Selector:
  """Turns a spec into a Selector for this data set.

  Args:
    spec: see the module docstring.
    label_names: class names of the data set's 'label' feature, or None.
    attributes: attribute name -> class names (datasets.attribute_features).

  Returns:
    The Selector.

  Raises:
    AttributeSpecError: the spec names no label class or attribute of the data set.
  """
  text = spec.strip()
  match = re.fullmatch(r"\s*([^=!]+?)\s*(?:(!=|=)\s*(.+?)\s*)?", text)
  if not text or match is None:
    raise AttributeSpecError(f"attribute {spec!r} is not NAME, NAME=VALUE or NAME!=VALUE.")
  name, op, value = match.group(1), match.group(2), match.group(3)
  attribute = _match(name, list(attributes))
  if attribute is not None:
    classes = attributes[attribute]
    is_bool = list(classes) == ["False", "True"]
    if op is None:
      if is_bool:
        return Selector(attribute, "==", 1, f"{attribute}=True")
      return Selector(attribute, "not_mode", None, f"{attribute} not its most common variant")
    index = _class_index(value, classes, f"attribute '{attribute}'")
    return Selector(attribute, op if op == "!=" else "==", index,
                    f"{attribute}{op}{classes[index]}")
  if label_names is not None:
    if name.lower() == LABEL and op is not None:
      index = _class_index(value, label_names, "the label")
      return Selector(LABEL, op if op == "!=" else "==", index,
                      f"label{op}{label_names[index]}")
    if op is None:
      found = _match(name, label_names)
      if found is not None:
        index = list(label_names).index(found)
        return Selector(LABEL, "==", index, f"label={found}")
      if re.fullmatch(r"\d+", name) and int(name) < len(label_names):
        return Selector(LABEL, "==", int(name), f"label={label_names[int(name)]}")
  known = []
  if label_names is not None:
    known.append("label classes: " + ", ".join(label_names[:20]) +
                 (", ..." if len(label_names) > 20 else ""))
  if attributes:
    names = sorted(attributes)
    known.append("attributes: " + ", ".join(names[:40]) + (", ..." if len(names) > 40 else ""))
  hint = "; ".join(known) if known else "this data set has neither labels nor attributes"
  raise AttributeSpecError(f"unknown attribute {spec!r} ({hint}).")


def feature_values(batch: dict, feature: str) -> np.ndarray:
  if feature == LABEL:
    return batch[LABEL]
  return batch["attributes"][feature]


def select(values: np.ndarray, selector: Selector, *, spec: str, split: str) -> np.ndarray:
  """The examples having the attribute, as a boolean mask.

  Raises:
    NoExamplesError: no example has the attribute, or every example has it.
  """
  selector = selector.resolved(values)
  positive = selector.positives(values)
  n_pos, n_neg = int(positive.sum()), int((~positive).sum())
  if n_pos == 0:
    raise NoExamplesError(f"attribute {spec!r} ({selector.description}): none of the "
                          f"{len(positive)} examples of split '{split}' has it, so there is "
                          "no concept vector; choose another value or use more examples.")
  if n_neg == 0:
    raise NoExamplesError(f"attribute {spec!r} ({selector.description}): all {len(positive)} "
                          f"examples of split '{split}' have it, so there is nothing to "
                          "compare with.")
  return positive


@dataclasses.dataclass
class ConceptVector:
  vector: np.ndarray  # [latent_dim] float32.
  info: dict  # What the JSON holds.


def compute(latent_means: np.ndarray, values: np.ndarray, selector: Selector, *, spec: str,
            split: str) -> ConceptVector:
  """mean(latents with the attribute) - mean(latents without).

  Args:
    latent_means: [N, L] posterior means of the split's examples.
    values: [N] the selector's feature for the same examples.
    selector: from parse().
    spec: the user's spec (recorded).
    split: the split the examples came from (recorded).

  Raises:
    NoExamplesError: no example has the attribute, or every example has it.
  """
  latent_means = np.asarray(latent_means, np.float64)
  selector = selector.resolved(values)
  positive = select(values, selector, spec=spec, split=split)
  n_pos, n_neg = int(positive.sum()), int((~positive).sum())
  vector = latent_means[positive].mean(0) - latent_means[~positive].mean(0)
  info = {
      "spec": spec,
      "description": selector.description,
      "split": split,
      "examples": len(positive),
      "positives": n_pos,
      "negatives": n_neg,
      "latent_dim": int(latent_means.shape[1]),
      "norm": float(np.linalg.norm(vector)),
  }
  return ConceptVector(vector.astype(np.float32), info)


def paths(workdir: str, step: int, spec: str) -> tuple:
  """(.npy path, .json path) of a run's concept vector at `step`."""
  base = os.path.join(workdir, VECTORS_SUBDIR, f"step_{int(step)}", file_name(spec))
  return base + ".npy", base + ".json"


def save(workdir: str, step: int, concept: ConceptVector) -> tuple:
  """Writes the vector and its JSON (each via a temporary file and a rename).

  Returns:
    (.npy path, .json path).
  """
  npy, meta = paths(workdir, step, concept.info["spec"])
  tf.io.gfile.makedirs(os.path.dirname(npy))
  buffer = io.BytesIO()
  np.save(buffer, concept.vector)
  tmp = npy + ".tmp"
  with tf.io.gfile.GFile(tmp, "wb") as f:
    f.write(buffer.getvalue())
  tf.io.gfile.rename(tmp, npy, overwrite=True)
  info = dict(concept.info, step=int(step), vector_file=os.path.basename(npy),
              created=datetime.datetime.now(datetime.timezone.utc).isoformat())
  # The JSON is written last: a vector counts as saved once its JSON exists.
  fileio.write_text_atomic(meta, json.dumps(info, indent=2, sort_keys=True))
  return npy, meta


def load_saved(workdir: str, step: int, spec: str, *, split: str,
               examples: int) -> Optional[ConceptVector]:
  """The saved vector for (step, spec) if it was made from the same split and example count."""
  npy, meta = paths(workdir, step, spec)
  try:
    with tf.io.gfile.GFile(meta, "r") as f:
      info = json.loads(f.read())
    if info.get("split") != split or info.get("examples") != examples:
      return None
    with tf.io.gfile.GFile(npy, "rb") as f:
      vector = np.load(io.BytesIO(f.read()))
  except (tf.errors.OpError, ValueError, OSError):
    return None
  return ConceptVector(vector.astype(np.float32), info)

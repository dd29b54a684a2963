"""What changed in a run's config since it started, and whether a resume may go on with it.

A workdir holds one run: its checkpoints, its metrics.jsonl and its config.json must describe the
same training. A resume whose config changes what the run means (data, model, objective,
optimiser, batch, seed, ...) would mix two runs under one name, so it is refused before anything
is written, unless the user accepts the changes explicitly (`--accept_config_changes`); accepted
changes are appended to `config_history.jsonl`, so the workdir keeps saying what happened.
Changes that only say how long to train, how often to log, evaluate or save, or where things run
are allowed, logged and recorded the same way.
"""
import datetime
import json
import socket
from typing import Optional

from absl import logging
import ml_collections
import tensorflow as tf

from vae_dist.config import defaults
from vae_dist.errors import WorkdirError
from vae_dist import fileio
from vae_dist import run_files

ACCEPT_FLAG = "--accept_config_changes"

# Fields that change neither the data, the model, the objective nor the optimisation a step
# does: the length of the run, cadences, logging and evaluation settings, places and devices.
# Any other field (and any field added later) counts as changing what the run means.
HARMLESS = frozenset({
    "name", "data_dir", "manual_dir", "cache", "cache_max_bytes", "skip_corrupt_images",
    "num_epochs", "num_train_steps", "eval_num_examples", "eval_batch_size",
    "strategy", "tpu", "num_cpu_devices", "cluster_wait_seconds", "steps_per_loop",
    "jit_compile", "deterministic", "log_every_steps", "eval_every_steps",
    "checkpoint_every_steps", "max_to_keep", "keep_every_steps", "keep_best", "restore_from",
    "restore_weights_only", "num_image_examples", "num_scatter_examples", "profile_steps",
    "skip_nonfinite_steps", "cache_dir", "input_parallelism", "prefetch_batches",
    "steps_per_element",
})
_MAX_SHOWN = 8


def _flat(values: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in values.items():
    if isinstance(value, dict):
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def _as_json(config: ml_collections.ConfigDict) -> dict:
  return json.loads(config.to_json_best_effort(sort_keys=True))


def read_recorded(workdir: str) -> Optional[dict]:
  """The config a run recorded in `<workdir>/config.json`, or None when there is none.

  Raises:
    WorkdirError: config.json is not a file holding a JSON object (named in the message).
  """
  path = run_files.RunDir(workdir).config
  if not tf.io.gfile.exists(path):
    return None
  if tf.io.gfile.isdir(path):
    raise WorkdirError(f"{path} is a directory, where the run keeps its config (a file); move "
                       "it away and start again.")
  try:
    with tf.io.gfile.GFile(path) as f:
      values = json.loads(f.read())
  except (tf.errors.OpError, ValueError, UnicodeDecodeError) as e:
    raise WorkdirError(f"{path} is not valid JSON ({str(e).splitlines()[0]}): it is the config "
                       "the run started with. Restore it, or start a new --workdir.") from None
  if not isinstance(values, dict):
    raise WorkdirError(f"{path} does not hold a JSON object: it is the config the run started "
                       "with. Restore it, or start a new --workdir.")
  _upgrade(values)
  try:
    defaults.base_config().update(values)
  except (TypeError, ValueError, KeyError, AttributeError) as e:
    raise WorkdirError(f"{path} does not hold a config of this version of vae_dist "
                       f"({' '.join(str(e).split())[:300]}): it is the config the run started "
                       "with. Restore it, or start a new --workdir.") from None
  return values


def _upgrade(values: dict) -> None:
  """Brings a config.json of an earlier version to this one's fields, in place."""
  # BatchNorm always normalises over the global batch now: the switch is gone.
  values.pop("sync_batch_norm", None)
  # jit_compile was a bool before it had 'auto'.
  if isinstance(values.get("jit_compile"), bool):
    values["jit_compile"] = "true" if values["jit_compile"] else "false"
  # Runs from before config.shuffle drew their epochs through the shuffle buffer; said here,
  # not left to the default, so that a later default cannot change what an old run was.
  values.setdefault("shuffle", "buffer")


def changes(recorded: dict, config: ml_collections.ConfigDict) -> list:
  """[(field, before, now)] for every field whose value differs, sorted by field.

  Fields a run of an older version did not record count as their default.
  """
  before = _flat(_as_json(defaults.base_config()))
  before.update(_flat(recorded))
  now = _flat(_as_json(config))
  return [(k, before.get(k), now.get(k)) for k in sorted(set(before) | set(now))
          if before.get(k) != now.get(k)]


def _describe(found: list) -> str:
  shown = [f"{k} {a!r} -> {b!r}" for k, a, b in found[:_MAX_SHOWN]]
  more = f" and {len(found) - _MAX_SHOWN} more" if len(found) > _MAX_SHOWN else ""
  return ", ".join(shown) + more


def check_resume(workdir: str, config: ml_collections.ConfigDict, *, has_checkpoints: bool,
                 accept: bool) -> Optional[dict]:
  """Refuses a resume whose config changes what the run means, unless `accept`.

  Args:
    workdir: the run's workdir.
    config: the config of this start.
    has_checkpoints: whether the run has committed checkpoints (without any, nothing of the
      earlier run is continued, and any config is fine).
    accept: the user accepted every change (--accept_config_changes).

  Returns:
    The history record to append once the run has started (None when nothing changed).

  Raises:
    WorkdirError: changes that alter the run, not accepted; or an unreadable config.json.
  """
  recorded = read_recorded(workdir)
  if recorded is None or not has_checkpoints:
    return None
  found = changes(recorded, config)
  if not found:
    return None
  meaning = [c for c in found if c[0].split(".")[0] not in HARMLESS]
  if meaning and not accept:
    raise WorkdirError(
        f"the config differs from the one the run in {workdir} started with in fields that "
        f"change what it trains: {_describe(meaning)}. Nothing was written. Either start a new "
        f"run with another --workdir, or pass {ACCEPT_FLAG} to continue this run with the new "
        f"values (recorded in {run_files.RunDir(workdir).config_history}).")
  logging.warning("Config changed since the run in %s started: %s%s.", workdir, _describe(found),
                  " (accepted with " + ACCEPT_FLAG + ")" if meaning else "")
  return {"changes": [{"field": k, "before": a, "now": b} for k, a, b in found],
          "accepted": bool(meaning)}


def record(workdir: str, entry: dict, step: int) -> None:
  """Appends `entry` (from check_resume) to config_history.jsonl, with when, where and the step."""
  path = run_files.RunDir(workdir).config_history
  entry = dict(entry, step=int(step), host=socket.gethostname(),
               time=datetime.datetime.now(datetime.timezone.utc).isoformat())
  previous = ""
  if tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path) as f:
      previous = f.read()
    if previous and not previous.endswith("\n"):
      previous += "\n"
  # Rewritten whole (atomically): object stores cannot append.
  fileio.write_text_atomic(path, previous + json.dumps(entry, sort_keys=True) + "\n")

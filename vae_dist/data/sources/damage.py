"""Finding the prepared data file that a DataLossError came from, to name it to the user.

TensorFlow reports a truncated or corrupt TFRecord shard as "corrupted record at N" without the
file's name. Only after such an error, every shard of the prepared data set is read through once
(record framing and checksums), so the message can name the damaged file and how to prepare the
data again.
"""
import re
from typing import List, Tuple

import tensorflow as tf

from vae_dist import errors


def damaged_shards(data_dir: str) -> List[Tuple[str, str]]:
  """[(path, reason)] for every TFRecord shard under `data_dir` that does not read through."""
  found = []
  for path in sorted(tf.io.gfile.glob(f"{data_dir.rstrip('/')}/*.tfrecord*")):
    try:
      for _ in tf.data.TFRecordDataset(path):
        pass
    except (tf.errors.DataLossError, tf.errors.OutOfRangeError) as e:
      found.append((path, _reason(e)))
  return found


def _reason(error: BaseException) -> str:
  """TF's message without its function-node prefix and op suffix: 'truncated record at 392'."""
  whole = getattr(error, "message", None) or str(error)
  found = re.search(r"(?:truncated|corrupted) record at \d+", whole)
  if found:  # Inside a tf.function the first line is only "Graph execution error:".
    return found.group(0)
  text = errors.first_line(error)
  text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
  text = re.sub(r"\s*\[Op:\w+\].*$", "", text)
  return text.replace("' failed with", ":").strip(" '")


def describe(builder, error: BaseException) -> str:
  """The user's message for a DataLossError while reading `builder`'s prepared data."""
  data_dir = builder.data_dir
  shards = damaged_shards(data_dir)
  if shards:
    what = (f"the prepared data file {shards[0][0]} is damaged ({shards[0][1]})" +
            (f", and {len(shards) - 1} more file(s) in {data_dir}" if len(shards) > 1 else ""))
  else:
    what = f"a prepared data file in {data_dir} is damaged ({_reason(error)})"
  return (f"{what}. Committed checkpoints are unchanged. Remove the prepared copy "
          f"(rm -r {data_dir}) and start the same command again: it prepares the data set "
          "again from its source.")


def describe_without_builder(error: BaseException) -> str:
  """The message when only the error is known (a tool whose data broke while it read it)."""
  return (f"a prepared data file is damaged ({_reason(error)}). Remove the prepared copy of the "
          "data set (its directory under --data_dir, or the run's config.data_dir) and run the "
          "training command or this tool again: it prepares the data set again from its source.")

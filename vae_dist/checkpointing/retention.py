"""Which committed steps a run keeps: the newest N, every Kth, the best by a metric, and always
the newest (what a restart resumes from)."""
import dataclasses
import math
from typing import Callable, Optional

from vae_dist.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Retention:
  """What to keep; checked on creation (errors are named after the config fields).

  Attributes:
    max_to_keep: the N most recent committed steps; None keeps every step.
    keep_every_steps: also every step that is a multiple of this; 0 turns it off.
    keep_best: also the K steps with the highest `best_metric`; 0 turns it off.
    best_metric: looked up in a step's metadata as metadata["metrics"][best_metric], else
      metadata[best_metric]; higher is better.
  """
  max_to_keep: Optional[int] = 3
  keep_every_steps: int = 0
  keep_best: int = 0
  best_metric: str = "eval/elbo"

  def __post_init__(self):
    if self.max_to_keep is not None and self.max_to_keep < 1:
      raise ConfigError("max_to_keep", f"must be at least 1, got {self.max_to_keep}.")
    if self.keep_every_steps < 0:
      raise ConfigError("keep_every_steps",
                        f"must be 0 (off) or positive, got {self.keep_every_steps}.")
    if self.keep_best < 0:
      raise ConfigError("keep_best", f"must be 0 (off) or positive, got {self.keep_best}.")

  def metric(self, metadata: dict) -> Optional[float]:
    """The finite `best_metric` a step's metadata holds, or None (the step is not ranked)."""
    metrics = metadata.get("metrics")
    value = metrics.get(self.best_metric) if isinstance(metrics, dict) else None
    if value is None:
      value = metadata.get(self.best_metric)
    if isinstance(value, (int, float)) and math.isfinite(value):
      return float(value)
    return None

  def steps_to_keep(self, steps: list, metric_of: Callable[[int], Optional[float]]) -> set:
    """The steps of `steps` (ascending) to keep; metric_of(step) is only asked with keep_best."""
    keep = set(steps if self.max_to_keep is None else steps[-self.max_to_keep:])
    if self.keep_every_steps:
      keep.update(s for s in steps if s % self.keep_every_steps == 0)
    if self.keep_best:
      ranked = sorted(((m, s) for s in steps if (m := metric_of(s)) is not None), reverse=True)
      keep.update(s for _, s in ranked[:self.keep_best])
    if steps:
      keep.add(steps[-1])
    return keep

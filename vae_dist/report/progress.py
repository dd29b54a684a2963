"""A training progress line with rate and ETA, redrawn in place when stdout is a terminal.

In a log file (stdout not a terminal) nothing is drawn: the log lines at config.log_every_steps
already carry step, loss, examples/s and ETA (run_summaries), one plain line each.

The line ends with a carriage return, not a newline, so a log line written after it starts at
column 0 and replaces it; the next host loop draws it again below.
"""
import sys
import time


def clock(seconds: float) -> str:
  """'1:02:03', '2:03' (h:mm:ss, m:ss)."""
  seconds = int(max(0, seconds))
  hours, rest = divmod(seconds, 3600)
  return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class LoopProgress:
  """`update(step)` after each host loop; the rate excludes the first loop (tracing)."""

  def __init__(self, start_step: int, total_steps: int, stream=None):
    self.stream = sys.stdout if stream is None else stream
    self.total = total_steps
    self.start = start_step
    self._first = None  # (time, step) at the end of the first loop.
    try:
      self.enabled = self.stream.isatty()
    except (AttributeError, ValueError):
      self.enabled = False

  def line(self, step: int, now: float) -> str:
    """'step 120/400 (30%)  52.1 steps/s  ETA 0:05' (rate and ETA from the second loop on)."""
    text = f"step {step}/{self.total} ({100 * step // max(1, self.total)}%)"
    if self._first is None:
      self._first = (now, step)
    elif step > self._first[1]:
      rate = (step - self._first[1]) / max(now - self._first[0], 1e-9)
      text += f"  {rate:.1f} steps/s  ETA {clock((self.total - step) / rate)}"
    return text

  def update(self, step: int) -> None:
    text = self.line(step, time.perf_counter())
    if self.enabled:
      end = "\n" if step >= self.total else "\r"
      self.stream.write(f"\r\x1b[K{text}{end}")
      self.stream.flush()

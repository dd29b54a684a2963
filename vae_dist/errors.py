"""Errors that end a run with one message meant for the user, not a traceback.

`main` catches `VaeDistError`, logs its message and exits non-zero; everything else is a bug and
keeps its traceback.
"""


class VaeDistError(Exception):
  """Base class: the message alone tells the user what is wrong and what to do."""


class ConfigError(VaeDistError):
  """A config field has a value the pipeline cannot use."""

  def __init__(self, field: str, message: str):
    self.field = field
    super().__init__(f"config.{field}: {message}")


class DataError(VaeDistError):
  """A data set is missing, empty or unreadable."""


class WorkdirError(VaeDistError):
  """The workdir cannot be used (not writable, locked by another run, ...)."""


class TrainingError(VaeDistError):
  """Training cannot go on (for example a non-finite loss)."""

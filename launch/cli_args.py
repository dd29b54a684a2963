"""Command-line handling shared by the launchers: their own flags versus the trainer's.

Everything after a lone `--`, and every `--config.FIELD[=VALUE]` before it, belongs to the
training program and is kept verbatim and in order; `--config=FILE` itself is the launcher's flag
(it names the config file the training program receives).
"""
import os
import sys
from typing import List, Sequence, Tuple

from absl import flags


def split_passthrough(argv: Sequence[str]) -> Tuple[List[str], List[str]]:
  """Splits the arguments (without the program name) into (launcher's, training program's)."""
  own, passthrough = [], []
  for i, arg in enumerate(argv):
    if arg == "--":
      passthrough.extend(argv[i + 1:])
      break
    if arg.startswith(("--config.", "-config.")):
      passthrough.append(arg)
    else:
      own.append(arg)
  return own, passthrough


def flags_parser(own_flags: flags.FlagValues, doc: str, passthrough_sink: List[str]):
  """An app.run flags_parser: absl's global flags, then the launcher's, then the pass-through.

  The pass-through arguments are stored in `passthrough_sink` (app.run gives main only what the
  parser returns). --help prints the launcher's docstring and its flags.
  """

  def parse(argv: List[str]) -> List[str]:
    own, passthrough = split_passthrough(argv[1:])
    passthrough_sink[:] = passthrough
    if any(a in ("-h", "-help", "--help", "--helpshort", "--helpfull") for a in own):
      print(doc)
      print(own_flags.get_help())
      sys.exit(0)
    try:
      # absl's global flags (--verbosity, --logtostderr, ...) first; the rest must be ours.
      rest = flags.FLAGS(argv[:1] + own, known_only=True)
      return own_flags(rest)
    except flags.Error as e:
      print(f"{os.path.basename(argv[0])}: error: {e}", file=sys.stderr)
      sys.exit(2)

  return parse

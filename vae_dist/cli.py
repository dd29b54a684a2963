"""The one command-line wrapper of every vae_dist command: flag parsing, --help, errors, Ctrl-C.

main (training), generate, evaluate and export define their own flags and call run(main). What
the user sees is the same everywhere:

  * a mistake (a bad flag, a missing or broken config file, a bad --config.* override, any
    VaeDistError, a write refused by storage, a damaged prepared data file) is ONE `error: ...`
    line on stderr, without a traceback; exit status 2 for flag and config-file errors (found
    before anything runs), 1 for the rest;
  * a run stopped by a preemption notice, SIGTERM or Ctrl-C saved its checkpoint: one line, exit
    status 143 (RESTARTABLE_EXIT_CODE) so that launchers start it again; a Ctrl-C outside a
    training or evaluation loop is one line and exit status 130 (the shell's convention);
  * --help (-h) says what the command does and lists its own flags, exit status 0;
  * anything else is a bug and keeps its traceback.

--config takes a file (configs/mnist.py[:ARG]) or the name of a config shipped inside the package
(mnist[:ARG], fashion_mnist:smoke), so installed console scripts work from any directory.

This module must not import TensorFlow at import time: --help and flag errors answer at once.
"""
import math
import os
import re
import signal
import sys

from absl import app
from absl import flags

from vae_dist import console
from vae_dist import ctrl_c
from vae_dist.errors import UsageError, VaeDistError  # UsageError: cli.UsageError too.

FLAGS = flags.FLAGS

# Exit statuses: the user's mistake found while parsing flags; found later; Ctrl-C outside a loop.
USAGE_EXIT_CODE = 2
ERROR_EXIT_CODE = 1
INTERRUPTED_EXIT_CODE = 130
INTERRUPTED_LINE = "Interrupted (Ctrl-C); stopped without finishing, nothing was left half-written."


def define_common_flags() -> None:
  """--workdir, --step, --data_dir and --manual_dir of the tools that read a trained run."""
  flags.DEFINE_string("workdir", None, "The training run's workdir (holds config.json and "
                      "checkpoints/).")
  flags.DEFINE_integer("step", None, "Checkpoint step to use; default: the latest committed one.")
  flags.DEFINE_string(
      "data_dir", None, "TFDS data dir to read the data set from, when it is no longer where "
      "the run's config.json says (config.data_dir).")
  flags.DEFINE_string(
      "manual_dir", None, "Folder of hand-downloaded archives or IDX files, when not the run's "
      "config.manual_dir.")


def data_overrides() -> dict:
  """Config fields the data flags replace (only those given)."""
  return {"data_dir": FLAGS.data_dir, "manual_dir": FLAGS.manual_dir}


def parse_list(text: str, kind, flag: str) -> list:
  """'1,2, 3' -> [1, 2, 3] with `kind` (int or float).

  Raises:
    UsageError: an item is not a `kind`.
  """
  try:
    return [kind(item) for item in text.split(",") if item.strip()]
  except ValueError:
    raise UsageError(f"--{flag}={text!r} is not a comma-separated list of "
                     f"{kind.__name__}s.") from None


# The largest seed the tools accept: TF's stateless ops take int64, NumPy's take < 2**32; one
# range for every tool and for config.seed.
MAX_SEED = 2**32 - 1


def check_range(flag: str, value, low=None, high=None, *, allow=(), why: str = "") -> None:
  """Refuses a flag value outside [low, high] (or not finite), before any work is done.

  Args:
    flag: the flag's name without dashes.
    value: its value (int or float).
    low, high: inclusive bounds; None for no bound.
    allow: values accepted whatever the bounds (e.g. -1 for "all").
    why: what the bound protects, appended to the message.

  Raises:
    UsageError: naming the flag, the value and the range.
  """
  if value in allow:
    return
  bad = isinstance(value, float) and not math.isfinite(value)
  bad = bad or (low is not None and value < low) or (high is not None and value > high)
  if bad:
    if low is not None and high is not None:
      span = f"from {low} to {high}"
    elif low is not None:
      span = f"at least {low}"
    else:
      span = f"at most {high}"
    extra = f" (or {', '.join(map(str, allow))})" if allow else ""
    raise UsageError(f"--{flag} must be {span}{extra}, got {value}{'; ' + why if why else ''}.")


def check_common_flags() -> None:
  """--step: a checkpoint step is never negative."""
  if FLAGS.step is not None:
    check_range("step", FLAGS.step, 0)


# --- Configs: a file or the name of one shipped in the package. ---------------------------------

def config_dirs() -> list:
  """Where shipped configs live: the installed package's vae_dist/configs, else the checkout's.

  setup.py installs the repository's configs/ as the package vae_dist.configs (one copy of each
  file, no move): a wheel holds them, and a checkout (or an editable install of it) finds them in
  configs/ next to vae_dist/.
  """
  import importlib.util  # pylint: disable=g-import-not-at-top
  dirs = []
  try:
    spec = importlib.util.find_spec("vae_dist.configs")
  except (ImportError, ValueError):
    spec = None
  if spec is not None and spec.submodule_search_locations:
    dirs.extend(spec.submodule_search_locations)
  checkout = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
  if os.path.isdir(checkout) and checkout not in dirs:
    dirs.append(checkout)
  return dirs


def config_names() -> list:
  """The names of the shipped configs (mnist, fashion_mnist, ...)."""
  names = set()
  for folder in config_dirs():
    names.update(name[:-3] for name in os.listdir(folder)
                 if name.endswith(".py") and not name.startswith("_"))
  return sorted(names)


def resolve_config(value: str) -> str:
  """--config's value with a shipped config's name replaced by its file: 'mnist:smoke' -> path.

  A value naming an existing file, or one that looks like a path, is returned unchanged.

  Raises:
    UsageError: a name that is neither a file nor a shipped config.
  """
  file_part, sep, arg = value.partition(":")
  if os.path.exists(file_part) or os.sep in file_part or file_part.endswith(".py"):
    return value
  for folder in config_dirs():
    path = os.path.join(folder, f"{file_part}.py")
    if os.path.isfile(path):
      return path + sep + arg
  raise UsageError(f"--config={value}: no file {file_part!r} and no shipped config of that name "
                   f"(shipped: {', '.join(config_names())}; e.g. --config=mnist:smoke or "
                   "--config=configs/mnist.py).")


def _config_index(argv):
  """(index in argv, value) of --config=FILE[:ARG] / --config FILE[:ARG], or (None, None)."""
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return i, arg[len("--config="):]
    if arg == "--config" and i + 1 < len(argv):
      return i + 1, argv[i + 1]
  return None, None


def _config_file_error(error, config_file):
  """One line for a config file that is missing, does not parse, or whose get_config raises.

  None when `error` did not come from loading the config file (then it is an override's).
  """
  from vae_dist import errors  # pylint: disable=g-import-not-at-top  # Light: no TensorFlow.
  if isinstance(error, errors.VaeDistError):
    return str(error)  # Our own checks inside get_config (an unknown config argument, ...).
  if config_file is None:
    return None
  if isinstance(error, SyntaxError):
    return (f"--config={config_file}: the config file does not parse: {error.msg} at line "
            f"{error.lineno}.")
  real = os.path.realpath(config_file)
  tb = error.__traceback__
  while tb is not None:
    if os.path.realpath(tb.tb_frame.f_code.co_filename) == real:
      return (f"--config={config_file}: loading it raised {type(error).__name__}: "
              f"{errors.first_line(error)} (line {tb.tb_lineno}).")
    tb = tb.tb_next
  return None


def _override_error(e) -> str:
  """ml_collections' error for a bad --config.* override, as one line."""
  text = str(e).replace("\\n", " ").replace("\\'", "'")
  hint = re.search(r'Did you mean "([^"]+)" instead of "([^"]+)"', text)
  if hint:
    text = f"the config has no field '{hint.group(2)}'; did you mean '{hint.group(1)}'?"
  return f"bad --config override: {' '.join(text.split())}"


def _usage_error(message: str):
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(USAGE_EXIT_CODE)


def _wants_help(argv) -> bool:
  return any(arg in ("-h", "--help", "-?", "--helpshort") for arg in argv[1:])


def print_help(description: str, extra: str = "") -> None:
  """What the command does and its own flags (not absl's or TensorFlow's), on stdout."""
  print(description.strip())
  print("\nFlags:")
  for module, module_flags in sorted(FLAGS.flags_by_module_dict().items()):
    if not ("vae_dist" in module or module == sys.argv[0] or module == "__main__"):
      continue
    for flag in sorted(module_flags, key=lambda f: f.name):
      default = "" if flag.default is None else f" (default: {flag.default_as_str or flag.default})"
      print(f"  --{flag.name}: {' '.join(flag.help.split())}{default}")
  if extra:
    print(extra.strip())
  print("  --verbosity=1 shows TensorFlow's and TFDS' own log lines; --helpfull lists every flag.")


def parse_flags(argv, description: str = "", help_extra: str = ""):
  """absl's parser, with every error one `error:` line and --help exiting 0."""
  if _wants_help(argv):
    print_help(description, help_extra)
    sys.exit(0)
  index, value = _config_index(argv) if "config" in FLAGS else (None, None)
  config_file = None
  if index is not None:
    try:
      resolved = resolve_config(value)
    except UsageError as e:
      _usage_error(str(e))
    argv = list(argv)
    argv[index] = argv[index].replace(value, resolved, 1)
    config_file = resolved.partition(":")[0]
    if not os.path.isfile(config_file):
      # ml_collections would only say so at the first use of the config, with a traceback.
      what = "is a directory" if os.path.isdir(config_file) else "does not exist"
      _usage_error(f"--config={config_file}: the config file {what} (give a file such as "
                   f"configs/mnist.py, or a shipped config: {', '.join(config_names())}).")
  try:
    rest = FLAGS(argv)
  except flags.Error as e:
    text = str(e)
    if "Error whilst parsing config file" in text:
      # ml_collections wraps get_config's exception with its traceback; keep its last line.
      last = [line for line in text.splitlines() if line.strip()][-1]
      kind, _, message = last.partition(": ")
      if kind.endswith("ConfigArgumentError"):
        text = message
      else:
        text = (f"--config={config_file}: loading it raised {kind.rsplit('.', 1)[-1]}: "
                f"{message}")
    _usage_error(text)
  except Exception as e:  # pylint: disable=broad-except
    message = _config_file_error(e, config_file)
    if message is not None:
      _usage_error(message)
    if not isinstance(e, (AttributeError, KeyError, TypeError, ValueError)):
      raise
    if config_file and "has no attribute 'get_config'" in str(e):
      _usage_error(f"--config={config_file}: the file defines no get_config(); a config file "
                   "defines get_config(arg=None) returning the config (see configs/mnist.py).")
    _usage_error(_override_error(e))
  console.quiet_python_logging(FLAGS["verbosity"].present)
  return rest


# --- Running a command. -------------------------------------------------------------------------

def _fail(message: str, code: int = ERROR_EXIT_CODE):
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(code)


def guarded(main):
  """`main(argv)` with every outcome a user can cause turned into one line and an exit status."""
  def run_main(argv):
    if len(argv) > 1:
      _usage_error(f"unexpected arguments: {' '.join(argv[1:])} (flags take the form --name=value;"
                   " --help lists them).")
    from vae_dist import errors  # pylint: disable=g-import-not-at-top
    try:
      main(argv)
    except errors.RunPreempted:
      # train.py has said where it stopped and that the same command resumes.
      from vae_dist.train import preemption  # pylint: disable=g-import-not-at-top
      sys.exit(preemption.RESTARTABLE_EXIT_CODE)  # Saved; launchers start it again.
    except KeyboardInterrupt:
      # Ctrl-C where no loop could save at a boundary (preparing data, loading, ...): nothing
      # half-written is left (every write of a run is atomic), so stop quietly.
      ctrl_c.handled()
      signal.signal(signal.SIGINT, signal.SIG_DFL)
      print(INTERRUPTED_LINE, file=sys.stderr, flush=True)
      sys.exit(INTERRUPTED_EXIT_CODE)
    except VaeDistError as e:
      _fail(str(e))
    except Exception as e:  # pylint: disable=broad-except
      message = errors.describe_storage_failure(e)
      if message is not None:
        _fail(message)
      tf = sys.modules.get("tensorflow")
      if tf is not None and isinstance(e, tf.errors.DataLossError):
        # A damaged shard of the prepared data set (TF's message names no file).
        from vae_dist.data.sources import damage  # pylint: disable=g-import-not-at-top
        _fail(damage.describe_without_builder(e))
      raise  # A bug: keep the traceback.
  return run_main


def run(main, required=("workdir",), description: str = "", help_extra: str = "") -> None:
  """Runs `main(argv)` as the command: parses flags, then calls it through guarded().

  Args:
    main: the command's main(argv).
    required: flags that must be given.
    description: what the command does, for --help (default: the __main__ module's docstring).
    help_extra: more --help text (e.g. how to list the config fields).
  """
  if not description:
    description = getattr(sys.modules.get("__main__"), "__doc__", None) or ""
  flags.mark_flags_as_required(list(required))
  # Ctrl-C also answers while the main thread is inside one long TensorFlow call.
  ctrl_c.start(INTERRUPTED_LINE, INTERRUPTED_EXIT_CODE)
  app.run(guarded(main), flags_parser=lambda argv: parse_flags(argv, description, help_extra))

r"""Trains vae_dist on a Cloud TPU VM or TPU pod slice, driving `gcloud`.

Usage:
  python launch/tpu_vm.py STEP [STEP ...] --name=NAME --zone=ZONE --accelerator_type=TYPE \
      [--config=configs/NAME.py[:ARG] --workdir=DIR] [--config.FIELD=VALUE ...] \
      [other launcher flags] [-- TRAINING_FLAGS ...]

Steps (run in the order given):
  create  create the TPU VM (`tpu-vm create`, or a queued resource with --queued_resource).
  setup   copy the source to every worker and `pip install -e .[tpu]` there (--worker=all).
  train   start training detached on the TPU host(s); the log survives an SSH disconnect.
  logs    follow the training log (tail -F over ssh) until interrupted.
  status  print RUNNING / EXITED <code> / LOST / NOT_STARTED for the training process.
  stop    stop the training process (SIGTERM, then SIGKILL).
  delete  delete the TPU VM (or the queued resource and its node).
  run     create, setup, train, follow the logs until training ends, and with --spot
          --max_restarts=N recreate a preempted TPU and start again (training resumes from the
          checkpoints in --workdir); --delete_on_exit deletes the TPU however `run` ends.

Every `--config.FIELD=VALUE` flag, and everything after `--`, reaches the training program
verbatim: the remote command carries the argv base64-encoded, so no shell on either side ever
interprets it. `--dry_run` prints the commands (shell-quoted, one per line, ready to paste)
and runs nothing.

TensorFlow on a multi-host slice is single-client: one process (on worker 0) drives every TPU
host through the TPU runtime's servers, so by default `train` runs there only, with
TPU_NAME=<name> and TPU_LOAD_LIBRARY=0. The slice gets a TensorFlow pod image, and `setup`
switches every host's TPU runtime to --tpu_runtime_image, the worker build of the client's
TensorFlow (the table in BUILD_NOTES.md says which image for which generation and why).
`--train_workers=all` starts the same command on every worker instead, for multi-client programs.

Example:
  python launch/tpu_vm.py run --name=vae-v4 --zone=us-central2-b --accelerator_type=v4-8 \
      --spot --max_restarts=3 --delete_on_exit \
      --config=configs/mnist.py --workdir=gs://my-bucket/runs/mnist --config.batch_size=1024
"""
import dataclasses
import os
import re
import sys
import tempfile
from typing import Dict, List, Optional, Sequence

from absl import app
from absl import flags

try:  # Imported as a package (tests, python -m launch.NAME).
  from launch import cli_args
  from launch import remote_commands
  from launch import tpu_steps
  from launch import tpu_table
except ImportError:  # Run as a script: launch/ itself is sys.path[0].
  import cli_args
  import remote_commands
  import tpu_steps
  import tpu_table

LaunchError = tpu_table.LaunchError

STEPS = ("create", "setup", "train", "logs", "status", "stop", "delete", "run")

# tensorflow-tpu pulls libtpu from this index (it is not on PyPI).
LIBTPU_FIND_LINKS = "https://storage.googleapis.com/libtpu-tf-releases/index.html"

# The launcher's flags live apart from absl's global FLAGS, so that importing this module next to
# the training program (or the other launchers) never clashes over names like --config.
FLAGS = flags.FlagValues()


def _flag(define, name, default, help_text, **kwargs):
  return define(name, default, help=help_text, flag_values=FLAGS, **kwargs)


_NAME = _flag(flags.DEFINE_string, "name", None,
              "TPU VM (node) name; also the queued resource id.")
_PROJECT = _flag(flags.DEFINE_string, "project", "", "GCP project ('' uses gcloud's default).")
_ZONE = _flag(flags.DEFINE_string, "zone", "",
              "GCP zone, e.g. us-central2-b ('' uses gcloud's default).")
_ACCELERATOR_TYPE = _flag(flags.DEFINE_string, "accelerator_type", "v4-8",
                          "TPU type, e.g. v4-8, v4-32, v5litepod-16, v5p-8, v6e-8.")
_RUNTIME_VERSION = _flag(
    flags.DEFINE_string, "runtime_version", "",
    "TPU software version (--version). '' picks from the table in BUILD_NOTES.md: the "
    "generation's base image for one host, its TensorFlow pod image for a multi-host slice.")
_TPU_RUNTIME_IMAGE = _flag(
    flags.DEFINE_string, "tpu_runtime_image", "",
    "Multi-host slices: the TPU runtime (gRPC worker) container image whose TensorFlow matches "
    "the client's (the `tpu` extra's tensorflow-tpu); `setup` switches every host's "
    "tpu-runtime service to it. Required to set up a slice unless --pip_extra='' keeps the "
    "image's own TensorFlow for both.")
_NUM_HOSTS = _flag(flags.DEFINE_integer, "num_hosts", 0,
                   "Hosts in the slice; 0 derives it from --accelerator_type.")
_SPOT = _flag(flags.DEFINE_bool, "spot", False, "Create a Spot TPU (preemptible, cheaper).")
_QUEUED_RESOURCE = _flag(
    flags.DEFINE_bool, "queued_resource", False,
    "Create through `gcloud compute tpus queued-resources create` and wait until it is ACTIVE.")
_QUEUED_TIMEOUT = _flag(flags.DEFINE_float, "queued_resource_timeout_seconds", 24 * 3600.0,
                        "How long `create` waits for a queued resource to become ACTIVE.")

_CONFIG = _flag(flags.DEFINE_string, "config", None,
                "Training config, e.g. configs/mnist.py:smoke (relative to the repository).")
_WORKDIR = _flag(
    flags.DEFINE_string, "workdir", None,
    "Training workdir. Must be gs:// on a multi-host slice (every host, and the TPU recreated "
    "after a preemption, must see the same checkpoints).")
_DATA_DIR = _flag(flags.DEFINE_string, "data_dir", "",
                  "TFDS data dir, passed as --config.data_dir ('' keeps the config's).")

_REPO = _flag(flags.DEFINE_string, "repo",
              os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
              "Local source tree shipped to the workers as a tarball (unused with --git_url).")
_GIT_URL = _flag(flags.DEFINE_string, "git_url", "",
                 "Clone this repository on every worker instead of copying --repo.")
_GIT_REF = _flag(flags.DEFINE_string, "git_ref", "",
                 "Branch, tag or commit to check out with --git_url.")
_REMOTE_DIR = _flag(flags.DEFINE_string, "remote_dir", "vae_dist",
                    "Source directory on the workers, relative to the SSH home directory.")
_RUN_DIR = _flag(
    flags.DEFINE_string, "run_dir", "vae_dist_run",
    "Directory on the workers (relative to home) holding train.log, train.pid and train.exit.")
_REMOTE_PYTHON = _flag(flags.DEFINE_string, "remote_python", "python3",
                       "Python interpreter on the workers.")
_TRAIN_MODULE = _flag(flags.DEFINE_string, "train_module", "vae_dist.main",
                      "Module run with `python -m` on the workers.")
_REMOTE_ENV = _flag(flags.DEFINE_multi_string, "remote_env", [],
                    "KEY=VALUE set in the training process's environment (repeatable).")
_PIP_EXTRA = _flag(
    flags.DEFINE_string, "pip_extra", "tpu",
    "Extra installed by `setup` ('' keeps a TensorFlow that the runtime image already has).")
_PIP_FIND_LINKS = _flag(flags.DEFINE_string, "pip_find_links", LIBTPU_FIND_LINKS,
                        "pip --find-links for `setup` ('' for none).")

_TRAIN_WORKERS = _flag(
    flags.DEFINE_enum, "train_workers", "auto",
    "Where `train` starts the program: 'auto' is worker 0 on a multi-host slice (TensorFlow's "
    "single-client TPU model) and the only worker otherwise; 'all' starts it on every worker.",
    enum_values=["auto", "all", "0"])
_LOGS_WORKER = _flag(flags.DEFINE_string, "logs_worker", "0",
                     "Worker whose log `logs` follows, or 'all'.")
_MAX_RESTARTS = _flag(flags.DEFINE_integer, "max_restarts", 0,
                      "`run`: times a preempted TPU is recreated and training started again.")
_POLL_SECONDS = _flag(flags.DEFINE_float, "poll_seconds", 60.0,
                      "`run`: seconds between state and training status checks.")
_NOTICE_WAIT = _flag(
    flags.DEFINE_float, "notice_wait_seconds", 180.0,
    "`run`: after training stopped on a preemption notice (exit status 143), how long to wait "
    "for the TPU to be taken (then it is recreated) before training starts again on it.")
_DELETE_ON_EXIT = _flag(flags.DEFINE_bool, "delete_on_exit", False,
                        "`run`: delete the TPU however run ends (success, failure, Ctrl-C).")
_FOLLOW_LOGS = _flag(flags.DEFINE_bool, "follow_logs", True,
                     "`run`: stream worker 0's log while waiting.")
_GCLOUD = _flag(flags.DEFINE_string, "gcloud", "gcloud", "gcloud executable.")
_DRY_RUN = _flag(flags.DEFINE_bool, "dry_run", False,
                 "Print the commands that would run, one per line; run nothing.")


# ---------------------------------------------------------------------------------------------
# Command line: pass-through training flags.


# ---------------------------------------------------------------------------------------------
# The plan: validated settings, and the gcloud commands they imply.

# Where `setup` puts the source tarball on each worker (relative to the SSH home directory).
_REMOTE_TARBALL = "vae_dist_src.tar.gz"


@dataclasses.dataclass
class Plan:
  """Everything the steps need, validated before any command runs."""
  steps: List[str]
  name: str
  zone: str
  project: str
  accelerator: tpu_table.Accelerator
  accelerator_type: str
  runtime_version: str
  spot: bool
  queued_resource: bool
  train_on_all_workers: bool
  train_argv: List[str]
  train_env: Dict[str, str]
  remote_dir: str
  run_dir: str
  remote_python: str
  repo: str
  git_url: str
  git_ref: str
  pip_extra: str
  pip_find_links: str
  logs_worker: str
  gcloud: str = "gcloud"
  tpu_runtime_image: str = ""
  workdir: str = ""  # Where training checkpoints (what a restart resumes from).

  @property
  def local_tarball(self) -> str:
    return os.path.join(tempfile.gettempdir(), f"vae_dist_src_{self.name}.tar.gz")

  def _where(self) -> List[str]:
    args = [f"--zone={self.zone}"] if self.zone else []
    if self.project:
      args.append(f"--project={self.project}")
    return args

  def _tpu_vm(self, verb: str, *args: str) -> List[str]:
    return [self.gcloud, "compute", "tpus", "tpu-vm", verb, self.name, *self._where(), *args]

  def _queued(self, verb: str, *args: str) -> List[str]:
    return [self.gcloud, "compute", "tpus", "queued-resources", verb, self.name, *self._where(),
            *args]

  def create_command(self) -> List[str]:
    spot = ["--spot"] if self.spot else []
    if self.queued_resource:
      return self._queued("create", f"--node-id={self.name}",
                          f"--accelerator-type={self.accelerator_type}",
                          f"--runtime-version={self.runtime_version}", *spot)
    return self._tpu_vm("create", f"--accelerator-type={self.accelerator_type}",
                        f"--version={self.runtime_version}", *spot)

  def queued_state_command(self) -> List[str]:
    return self._queued("describe", "--format=value(state.state)")

  def state_command(self) -> List[str]:
    return self._tpu_vm("describe", "--format=value(state)")

  def delete_command(self) -> List[str]:
    if self.queued_resource:
      # --force also deletes the node the queued resource created.
      return self._queued("delete", "--force", "--quiet")
    return self._tpu_vm("delete", "--quiet")

  def ssh_command(self, worker: str, command: str) -> List[str]:
    # --quiet: never stop at a prompt (e.g. SSH key creation) in an unattended run.
    return self._tpu_vm("ssh", f"--worker={worker}", f"--command={command}", "--quiet")

  def tarball_command(self) -> List[str]:
    return ["tar", "-czf", self.local_tarball, "--exclude=.git", "--exclude=.venv",
            "--exclude=runs", "--exclude=__pycache__", "--exclude=*.egg-info", "-C", self.repo, "."]

  def scp_command(self) -> List[str]:
    return [self.gcloud, "compute", "tpus", "tpu-vm", "scp", self.local_tarball,
            f"{self.name}:{_REMOTE_TARBALL}", *self._where(), "--worker=all", "--quiet"]

  def setup_commands(self) -> List[List[str]]:
    remote = remote_commands.remote_setup_command(remote_dir=self.remote_dir, python=self.remote_python,
                                  pip_extra=self.pip_extra, find_links=self.pip_find_links,
                                  tarball=_REMOTE_TARBALL, git_url=self.git_url,
                                  git_ref=self.git_ref)
    commands = [] if self.git_url else [self.tarball_command(), self.scp_command()]
    commands.append(self.ssh_command("all", remote))
    if self.tpu_runtime_image:
      switch = tpu_table.runtime_switch_command(self.tpu_runtime_image)
      commands.append(self.ssh_command("all", switch))
    return commands

  @property
  def train_worker(self) -> str:
    return "all" if self.train_on_all_workers else "0"

  def train_command(self) -> List[str]:
    remote = remote_commands.remote_start_command(self.train_argv, self.train_env, cwd=self.remote_dir,
                                  run_dir=self.run_dir, python=self.remote_python)
    return self.ssh_command(self.train_worker, remote)

  def status_command(self) -> List[str]:
    return self.ssh_command("0", remote_commands.remote_status_command(self.run_dir, self.remote_python))

  def stop_command(self) -> List[str]:
    return self.ssh_command(self.train_worker, remote_commands.remote_stop_command(self.run_dir,
                                                                    self.remote_python))

  def logs_command(self, worker: Optional[str] = None) -> List[str]:
    return self.ssh_command(worker or self.logs_worker, remote_commands.remote_logs_command(self.run_dir))


def _has_flag(args: Sequence[str], name: str) -> bool:
  return any(a == name or a.startswith(name + "=") for a in args)


def training_argv(*, python: str, module: str, config: str, workdir: str, tpu: str,
                  data_dir: str, passthrough: Sequence[str]) -> List[str]:
  """The training command run on a TPU host; passthrough flags come last, verbatim."""
  # --config comes first: ml_collections rejects a --config.FIELD override that precedes it.
  argv = [python, "-m", module, f"--config={config}", f"--workdir={workdir}", f"--tpu={tpu}"]
  if data_dir:
    argv.append(f"--config.data_dir={data_dir}")
  if not _has_flag(passthrough, "--config.strategy"):
    argv.append("--config.strategy=tpu")
  return argv + list(passthrough)


def _parse_env(items: Sequence[str]) -> Dict[str, str]:
  env = {}
  for item in items:
    key, sep, value = item.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
      raise LaunchError(f"--remote_env={item!r} is not KEY=VALUE.")
    env[key] = value
  return env


def _check_relative_dir(flag: str, path: str) -> None:
  # remote_dir is deleted and recreated by `setup`: refuse anything that could reach outside home.
  parts = path.split("/")
  if not path or path.startswith(("/", "~")) or any(p in ("", ".", "..") for p in parts):
    raise LaunchError(f"--{flag}={path!r} must be a plain relative path under the home directory, "
                      "e.g. vae_dist.")


def make_plan(steps: Sequence[str], passthrough: Sequence[str]) -> Plan:
  """Validates the flags for `steps` and builds the plan; raises LaunchError on any problem."""
  if not steps:
    raise LaunchError(f"Name at least one step: {', '.join(STEPS)}.")
  unknown = [s for s in steps if s not in STEPS]
  if unknown:
    raise LaunchError(f"Unknown step(s) {', '.join(unknown)}; the steps are {', '.join(STEPS)}.")
  if "run" in steps and len(steps) > 1:
    raise LaunchError("`run` already does create, setup, train, logs (and delete); give it alone.")
  if not _NAME.value:
    raise LaunchError("--name is required (the TPU VM's name).")
  if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", _NAME.value):
    raise LaunchError(f"--name={_NAME.value!r}: use lowercase letters, digits and dashes.")

  accelerator = tpu_table.parse_accelerator(_ACCELERATOR_TYPE.value, _NUM_HOSTS.value)
  if _TRAIN_WORKERS.value == "all":
    on_all_workers = True
  elif _TRAIN_WORKERS.value == "0":
    on_all_workers = False
  else:
    on_all_workers = not accelerator.multi_host
  single_client_pod = accelerator.multi_host and not on_all_workers

  runtime_version = _RUNTIME_VERSION.value
  creates = any(s in ("create", "run") for s in steps)
  if not runtime_version:
    runtime_version = tpu_table.default_runtime_version(accelerator, single_client_pod)
    if creates and not runtime_version:
      raise LaunchError("Pass --runtime_version for this accelerator type.")

  trains = any(s in ("train", "run") for s in steps)
  train_argv, train_env = [], {}
  if trains:
    if not _CONFIG.value:
      raise LaunchError("--config is required to train, e.g. --config=configs/mnist.py.")
    if not _WORKDIR.value:
      raise LaunchError("--workdir is required to train (gs://bucket/path on a multi-host slice).")
  # Checked for every step that trains: a pod slice's hosts (and a recreated TPU after a
  # preemption) only share checkpoints through Cloud Storage.
  if trains and accelerator.multi_host and not _WORKDIR.value.startswith("gs://"):
    raise LaunchError(
        f"--workdir={_WORKDIR.value!r} is local, but --accelerator_type="
        f"{_ACCELERATOR_TYPE.value} has {accelerator.num_hosts} hosts: use a gs:// --workdir "
        "that every host can reach.")
  if trains and accelerator.multi_host:
    # Each host runs its own share of the input pipeline: data on worker 0's disk is missing on
    # the others. (The program checks the config's own values again before it creates anything.)
    read = [("--data_dir", _DATA_DIR.value)] + [
        (a.split("=", 1)[0], a.split("=", 1)[1]) for a in passthrough
        if a.split("=", 1)[0] in ("--config.data_dir", "--config.manual_dir",
                                  "--config.image_folder") and "=" in a]
    for flag, path in read:
      if path and not path.startswith("gs://"):
        raise LaunchError(
            f"{flag}={path!r} is local, but every host of the {accelerator.num_hosts}-host "
            f"--accelerator_type={_ACCELERATOR_TYPE.value} reads it: use a gs:// path.")
  sets_up = any(s in ("setup", "run") for s in steps)
  runtime_image = _TPU_RUNTIME_IMAGE.value
  if sets_up and single_client_pod and _PIP_EXTRA.value and not runtime_image:
    raise LaunchError(
        f"--accelerator_type={_ACCELERATOR_TYPE.value} is a {accelerator.num_hosts}-host slice: "
        "TensorFlow drives it from worker 0 through the TPU runtime on every host, which must "
        "run the same TensorFlow as the client. Pass --tpu_runtime_image=<the gRPC TPU worker "
        "image of the `tpu` extra's tensorflow-tpu> (setup switches every host to it), or "
        "--pip_extra='' to use the runtime image's own TensorFlow for both.")
  if runtime_image and not single_client_pod:
    raise LaunchError("--tpu_runtime_image is only for multi-host slices trained from worker 0.")
  if trains:
    tpu = _NAME.value if single_client_pod else "local"
    train_argv = training_argv(python=_REMOTE_PYTHON.value, module=_TRAIN_MODULE.value,
                               config=_CONFIG.value, workdir=_WORKDIR.value, tpu=tpu,
                               data_dir=_DATA_DIR.value, passthrough=passthrough)
    if single_client_pod:
      # The TPU runtime on each host owns its chips; the client on worker 0 must not load libtpu
      # itself but reach every host through TPU_NAME.
      train_env.update(TPU_NAME=_NAME.value, TPU_LOAD_LIBRARY="0")
    train_env.update(_parse_env(_REMOTE_ENV.value))
  elif passthrough:
    raise LaunchError(f"Training flags {passthrough[0]!r}... are only used by `train` and `run`.")

  _check_relative_dir("remote_dir", _REMOTE_DIR.value)
  _check_relative_dir("run_dir", _RUN_DIR.value)
  if any(s in ("setup", "run") for s in steps) and not _GIT_URL.value:
    if not os.path.isfile(os.path.join(_REPO.value, "setup.py")):
      raise LaunchError(f"--repo={_REPO.value!r} has no setup.py; point it at the vae_dist "
                        "checkout or use --git_url.")
  if _MAX_RESTARTS.value < 0:
    raise LaunchError("--max_restarts must be >= 0.")

  return Plan(
      steps=list(steps), name=_NAME.value, zone=_ZONE.value, project=_PROJECT.value,
      accelerator=accelerator, accelerator_type=_ACCELERATOR_TYPE.value,
      runtime_version=runtime_version, spot=_SPOT.value, queued_resource=_QUEUED_RESOURCE.value,
      train_on_all_workers=on_all_workers, train_argv=train_argv, train_env=train_env,
      remote_dir=_REMOTE_DIR.value, run_dir=_RUN_DIR.value, remote_python=_REMOTE_PYTHON.value,
      repo=os.path.abspath(_REPO.value), git_url=_GIT_URL.value, git_ref=_GIT_REF.value,
      pip_extra=_PIP_EXTRA.value, pip_find_links=_PIP_FIND_LINKS.value,
      logs_worker=_LOGS_WORKER.value, gcloud=_GCLOUD.value, tpu_runtime_image=runtime_image,
      workdir=_WORKDIR.value or "")


# ---------------------------------------------------------------------------------------------
# Running commands (or printing them).


# Filled by cli_args.flags_parser with the flags that go to the training program.
_PASSTHROUGH: List[str] = []


def main(argv: Sequence[str]) -> int:
  try:
    plan = make_plan(list(argv[1:]), _PASSTHROUGH)
    steps = tpu_steps.Steps(plan, tpu_steps.Runner(_DRY_RUN.value),
                            poll_seconds=_POLL_SECONDS.value,
                            max_restarts=_MAX_RESTARTS.value,
                            delete_on_exit=_DELETE_ON_EXIT.value, follow_logs=_FOLLOW_LOGS.value,
                            queued_timeout=_QUEUED_TIMEOUT.value, notice_wait=_NOTICE_WAIT.value)
    for step in plan.steps:
      rc = getattr(steps, step)()
      if rc != 0:
        return rc
    return 0
  except LaunchError as e:
    print(f"tpu_vm.py: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("tpu_vm.py: interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  app.run(main, flags_parser=cli_args.flags_parser(FLAGS, __doc__, _PASSTHROUGH))

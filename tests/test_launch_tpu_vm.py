"""Tests for launch/tpu_vm.py: dry-run commands, argument safety, and the `run` loop.

No gcloud exists here, so the launcher runs either with --dry_run (its printed commands are
parsed with shlex and checked structurally) or against a fake `gcloud` that executes the `ssh`
commands locally with `bash -c`, the way a worker's login shell would.
"""
import json
import os
import shlex
import subprocess
import sys
import textwrap
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from launch import cli_args  # pylint: disable=g-import-not-at-top,wrong-import-position
from launch import tpu_vm  # pylint: disable=g-import-not-at-top,wrong-import-position
from launch import remote_commands  # pylint: disable=g-import-not-at-top,wrong-import-position
from launch import tpu_table  # pylint: disable=g-import-not-at-top,wrong-import-position

LAUNCHER = os.path.join(REPO, "launch", "tpu_vm.py")

HOSTILE_OVERRIDES = [
    "--config.name=a b; rm -rf / $(x) \"q\"",
    "--config.name=line1\nline2 `touch /tmp/pwned_vae_dist` 'single' \\ $HOME ${PATH} !! *",
    "--config.dataset_config=--looks-like-a-flag=\t tab",
    "--config.name=",
    "--config.name=ünïcödé ✓",
]


def launch(*args, check=True):
  """Runs the launcher; returns (stdout, stderr, returncode)."""
  proc = subprocess.run([sys.executable, LAUNCHER, *args], capture_output=True, text=True,
                        timeout=60, cwd=REPO)
  if check:
    assert proc.returncode == 0, proc.stderr
  return proc.stdout, proc.stderr, proc.returncode


def dry_run(*args):
  """The dry-run commands, each split with shlex (they must be pasteable shell lines)."""
  out, _, _ = launch("--dry_run", *args)
  return [shlex.split(line) for line in out.splitlines()]


def flag_value(cmd, name):
  values = [a.split("=", 1)[1] for a in cmd if a.startswith(name + "=")]
  assert len(values) == 1, (name, cmd)
  return values[0]


def gcloud_cmds(cmds, *verb):
  """Commands starting with `gcloud compute tpus <verb...>`."""
  n = len(verb)
  return [c for c in cmds if c[:3] == ["gcloud", "compute", "tpus"] and tuple(c[3:3 + n]) == verb]


def remote_argv(command):
  """Splits a --command string the way the remote shell would."""
  return shlex.split(command)


COMMON = ["--name=vae-test", "--zone=us-central2-b", "--config=configs/mnist.py"]


@pytest.mark.parametrize("accelerator,hosts", [
    ("v2-8", 1), ("v2-32", 4), ("v3-8", 1), ("v4-8", 1), ("v4-16", 2), ("v4-32", 4),
    ("v5p-8", 1), ("v5p-16", 2), ("v5litepod-1", 1), ("v5litepod-4", 1), ("v5litepod-8", 1),
    ("v5litepod-16", 4), ("v5litepod-256", 64), ("v6e-8", 1), ("v6e-16", 4)])
def test_host_count_from_accelerator_type(accelerator, hosts):
  info = tpu_table.parse_accelerator(accelerator)
  assert info.num_hosts == hosts
  assert info.multi_host == (hosts > 1)


@pytest.mark.parametrize("accelerator", ["v4", "v4-", "tpu-v4-8", "v9x-8", ""])
def test_bad_or_unknown_accelerator_type(accelerator):
  with pytest.raises(tpu_vm.LaunchError):
    tpu_table.parse_accelerator(accelerator)
  if accelerator == "v9x-8":
    assert tpu_table.parse_accelerator(accelerator, num_hosts=2).num_hosts == 2


def test_split_passthrough_keeps_training_flags_verbatim_and_in_order():
  own, passthrough = cli_args.split_passthrough([
      "train", "--config.a=1", "--name=x", "--config=c.py", "--config.b", "--", "--name=y", "z"])
  assert own == ["train", "--name=x", "--config=c.py"]
  assert passthrough == ["--config.a=1", "--config.b", "--name=y", "z"]


def test_dry_run_single_host_v4_8(tmp_path):
  marker = tmp_path / "gcloud_ran"
  fake_gcloud = tmp_path / "gcloud"
  fake_gcloud.write_text(f"#!/bin/sh\ntouch {marker}\n")
  fake_gcloud.chmod(0o755)
  cmds = dry_run("create", "setup", "train", "logs", *COMMON, "--accelerator_type=v4-8",
                 "--runtime_version=tpu-ubuntu2204-base", "--workdir=/tmp/vae_runs/mnist",
                 "--spot", "--config.batch_size=256", f"--gcloud={fake_gcloud}")
  # Nothing ran: not gcloud, not even the local tar.
  assert not marker.exists()
  cmds = [[("gcloud" if a == str(fake_gcloud) else a) for a in c] for c in cmds]
  tpu = "vae-test"

  (create,) = gcloud_cmds(cmds, "tpu-vm", "create")
  assert create[5] == tpu
  assert flag_value(create, "--accelerator-type") == "v4-8"
  assert flag_value(create, "--zone") == "us-central2-b"
  assert flag_value(create, "--version") == "tpu-ubuntu2204-base"
  assert "--spot" in create

  # setup: local tarball -> scp to every worker -> install with the tpu extra on every worker.
  (tar,) = [c for c in cmds if c[0] == "tar"]
  assert not os.path.exists(tar[2])
  (scp,) = gcloud_cmds(cmds, "tpu-vm", "scp")
  assert scp[5] == tar[2] and "--worker=all" in scp
  ssh = gcloud_cmds(cmds, "tpu-vm", "ssh")
  setup, train, logs = ssh
  assert "--worker=all" in setup
  setup_shell = flag_value(setup, "--command")
  assert "pip install" in setup_shell and "-e .[tpu]" in " ".join(remote_argv(setup_shell))
  assert "VAE_DIST_TF_PROVIDED=1" in remote_argv(setup_shell)

  # train: every worker (there is one), detached through the supervisor's `start` mode.
  assert "--worker=all" in train
  remote = remote_argv(flag_value(train, "--command"))
  assert remote[:2] == ["python3", "-c"] and remote[3] == "start"
  payload = remote_commands.decode_payload(flag_value(train, "--command"))
  assert payload["argv"] == [
      "python3", "-m", "vae_dist.main", "--config=configs/mnist.py",
      "--workdir=/tmp/vae_runs/mnist", "--tpu=local", "--config.strategy=tpu",
      "--config.batch_size=256"]
  assert payload["env"] == {}
  assert payload["cwd"] == "vae_dist"

  assert "--worker=0" in logs
  assert remote_argv(flag_value(logs, "--command"))[:4] == ["tail", "-n", "+1", "-F"]


def test_dry_run_pod_v4_32():
  args = ["create", "setup", "train", *COMMON, "--accelerator_type=v4-32",
          "--runtime_version=tpu-vm-tf-2.20.0-pod-pjrt", "--workdir=gs://bucket/runs/mnist",
          "--tpu_runtime_image=gcr.io/example/grpc_tpu_worker:tf-2.20.0"]
  cmds = dry_run(*args)
  (create,) = gcloud_cmds(cmds, "tpu-vm", "create")
  assert flag_value(create, "--accelerator-type") == "v4-32"
  assert flag_value(create, "--version") == "tpu-vm-tf-2.20.0-pod-pjrt"
  setup, switch, train = gcloud_cmds(cmds, "tpu-vm", "ssh")
  assert "--worker=all" in setup and "--worker=all" in switch  # Every host.
  # TensorFlow drives a pod slice from one client on worker 0, through the TPU runtime.
  assert "--worker=0" in train
  payload = remote_commands.decode_payload(flag_value(train, "--command"))
  assert "--tpu=vae-test" in payload["argv"]
  assert payload["env"] == {"TPU_NAME": "vae-test", "TPU_LOAD_LIBRARY": "0"}

  # A multi-client program instead runs on every worker, each on its local TPU chips.
  cmds = dry_run(*[a for a in args if not a.startswith("--tpu_runtime_image")],
                 "--train_workers=all")
  _, train = gcloud_cmds(cmds, "tpu-vm", "ssh")
  assert "--worker=all" in train
  payload = remote_commands.decode_payload(flag_value(train, "--command"))
  assert "--tpu=local" in payload["argv"] and payload["env"] == {}
  assert remote_argv(flag_value(train, "--command"))[3] == "start"


@pytest.mark.parametrize("accelerator", ["v4-32", "v4-16", "v5litepod-16"])
@pytest.mark.parametrize("dry", [True, False])
def test_pod_with_local_workdir_fails_before_any_command(tmp_path, accelerator, dry):
  marker = tmp_path / "gcloud_ran"
  fake_gcloud = tmp_path / "gcloud"
  fake_gcloud.write_text(f"#!/bin/sh\ntouch {marker}\n")
  fake_gcloud.chmod(0o755)
  out, err, rc = launch(*(["--dry_run"] if dry else []), "run", *COMMON,
                        f"--accelerator_type={accelerator}",
                        "--runtime_version=tpu-vm-tf-2.20.0-pod-pjrt",
                        "--workdir=/home/me/runs/mnist", f"--gcloud={fake_gcloud}", check=False)
  assert rc != 0
  assert out == ""
  assert not marker.exists()
  assert "--workdir" in err and "gs://" in err


def test_missing_workdir_and_pod_runtime_are_reported_up_front():
  _, err, rc = launch("--dry_run", "train", *COMMON, "--accelerator_type=v4-8", check=False)
  assert rc != 0 and "--workdir" in err
  _, err, rc = launch("--dry_run", "setup", *COMMON, "--accelerator_type=v4-32", check=False)
  assert rc != 0 and "--tpu_runtime_image" in err


def test_dry_run_queued_resource_spot():
  cmds = dry_run("run", *COMMON, "--accelerator_type=v5litepod-16",
                 "--runtime_version=v2-alpha-tpuv5-lite", "--train_workers=all",
                 "--workdir=gs://b/r", "--queued_resource", "--spot", "--delete_on_exit",
                 "--project=my-proj")
  (create,) = gcloud_cmds(cmds, "queued-resources", "create")
  assert create[5] == "vae-test"
  assert flag_value(create, "--node-id") == "vae-test"
  assert flag_value(create, "--accelerator-type") == "v5litepod-16"
  assert flag_value(create, "--runtime-version") == "v2-alpha-tpuv5-lite"
  assert flag_value(create, "--project") == "my-proj"
  assert "--spot" in create
  assert gcloud_cmds(cmds, "queued-resources", "describe")
  assert not gcloud_cmds(cmds, "tpu-vm", "create")
  (delete,) = gcloud_cmds(cmds, "queued-resources", "delete")
  assert "--force" in delete and cmds[-1] == delete
  # run = create, setup, train, follow logs, poll state and status, delete.
  kinds = [c[3:5] for c in cmds if c[0] == "gcloud"]
  assert kinds.index(["tpu-vm", "describe"]) > kinds.index(["tpu-vm", "ssh"])


# --- The remote command string, executed locally by bash as a worker's login shell would. ---

ECHO_PROGRAM = textwrap.dedent("""\
    import json, os, sys
    print("ARGV_JSON " + json.dumps(sys.argv[1:]), flush=True)
    print("ENV_JSON " + json.dumps({k: os.environ.get(k) for k in ("TPU_NAME", "ODD")}), flush=True)
    """)


def run_remote(command, cwd, shell="bash"):
  """Runs a --command string with `<shell> -c` (what sshd does with the user's login shell)."""
  return subprocess.run([shell, "-c", command], cwd=cwd, capture_output=True, text=True,
                        timeout=30)


def wait_for_exit(run_dir, home, timeout=15.0):
  deadline = time.time() + timeout
  while time.time() < deadline:
    status = run_remote(remote_commands.remote_status_command(run_dir, sys.executable), home)
    kind, code = remote_commands.parse_status(status.stdout)
    if kind == "EXITED":
      return code
    time.sleep(0.1)
  raise AssertionError("training did not finish")


def log_json(home, run_dir, tag):
  with open(os.path.join(home, run_dir, "train.log"), encoding="utf-8") as f:
    lines = [l for l in f.read().splitlines() if l.startswith(tag + " ")]
  return json.loads(lines[-1][len(tag) + 1:])


@pytest.mark.parametrize("shell", ["bash", "sh"])
@pytest.mark.parametrize("hostile", HOSTILE_OVERRIDES)
def test_hostile_override_reaches_training_argv_unchanged(tmp_path, hostile, shell):
  home = tmp_path / "home"
  (home / "vae_dist").mkdir(parents=True)
  (home / "vae_dist" / "argv_echo.py").write_text(ECHO_PROGRAM)
  extra = "--config.seed=$(id -u);`id`"
  out, _, _ = launch("train", "--dry_run", *COMMON, "--accelerator_type=v4-8",
                     "--workdir=/tmp/w d", f"--remote_python={sys.executable}",
                     "--train_module=argv_echo", "--remote_env=ODD=$(x) `y` 'z' \"w\"",
                     hostile, "--", extra)
  (train,) = [shlex.split(line) for line in out.splitlines()]
  command = flag_value(train, "--command")

  result = run_remote(command, cwd=home, shell=shell)
  assert result.returncode == 0, result.stderr
  assert wait_for_exit("vae_dist_run", home) == 0
  argv = log_json(home, "vae_dist_run", "ARGV_JSON")
  assert argv == ["--config=configs/mnist.py", "--workdir=/tmp/w d", "--tpu=local",
                  "--config.strategy=tpu", hostile, extra]
  assert log_json(home, "vae_dist_run", "ENV_JSON")["ODD"] == "$(x) `y` 'z' \"w\""
  assert not os.path.exists("/tmp/pwned_vae_dist")


def test_remote_start_is_detached_and_refuses_a_second_run(tmp_path):
  """The start command returns at once; the program outlives it; status and stop work."""
  argv = [sys.executable, "-c", "import time, sys; print('up', flush=True); time.sleep(60)"]
  start = remote_commands.remote_start_command(argv, cwd=".", run_dir="rd", python=sys.executable)
  began = time.time()
  result = run_remote(start, cwd=tmp_path)
  assert result.returncode == 0, result.stderr
  assert time.time() - began < 10
  status = run_remote(remote_commands.remote_status_command("rd", sys.executable), tmp_path)
  kind, pid = remote_commands.parse_status(status.stdout)
  assert kind == "RUNNING"
  # A second start while the first still runs must not launch a competing trainer.
  again = run_remote(start, cwd=tmp_path)
  assert again.returncode == 3 and "already runs" in again.stderr
  stop = run_remote(remote_commands.remote_stop_command("rd", sys.executable, grace_seconds=5), tmp_path)
  assert stop.returncode == 0, stop.stderr
  assert wait_for_exit("rd", tmp_path) == 128 + 15  # SIGTERM
  del pid


def test_parse_status_ignores_noise():
  assert remote_commands.parse_status("Warning: x\nRUNNING 12\n") == ("RUNNING", 12)
  assert remote_commands.parse_status("EXITED 3") == ("EXITED", 3)
  assert remote_commands.parse_status("LOST\n") == ("LOST", None)
  assert remote_commands.parse_status("ssh: connect refused") == ("UNKNOWN", None)


# --- `run` against a fake gcloud: preemption, recreation, resume, delete on exit. ---

FAKE_GCLOUD = textwrap.dedent("""\
    #!{python}
    # Stand-in for gcloud: a "TPU VM" is a directory; ssh runs the command there with bash.
    import json, os, shutil, sys
    state_dir = os.environ["FAKE_GCLOUD_DIR"]
    args = sys.argv[1:]
    with open(os.path.join(state_dir, "calls.jsonl"), "a") as f:
      f.write(json.dumps(args) + "\\n")
    group, verb, name = args[2], args[3], args[4] if len(args) > 4 else ""
    home = os.path.join(state_dir, "vm")
    state_file = os.path.join(state_dir, "state")
    if verb == "create":
      shutil.rmtree(home, ignore_errors=True)
      os.makedirs(home)
      open(state_file, "w").write("READY")
      n = int(open(os.path.join(state_dir, "creates")).read()) if os.path.exists(
          os.path.join(state_dir, "creates")) else 0
      open(os.path.join(state_dir, "creates"), "w").write(str(n + 1))
    elif verb == "delete":
      shutil.rmtree(home, ignore_errors=True)
      if os.path.exists(state_file):
        os.remove(state_file)
    elif verb == "describe":
      if not os.path.exists(state_file):
        sys.exit("NOT_FOUND")
      creates = int(open(os.path.join(state_dir, "creates")).read())
      if os.environ.get("FAKE_PREEMPT") == "after_notice":
        # The first TPU stays READY while training runs and is taken only after training has
        # saved and stopped on the notice, as on a Spot VM's 30 s warning.
        stopped = os.path.exists(os.path.join(home, "vae_dist_run", "train.exit"))
        seen = os.path.join(state_dir, "seen_stopped")
        taken = creates == 1 and stopped and os.path.exists(seen)
        if creates == 1 and stopped:
          open(seen, "w").close()  # READY once more after the stop, then taken.
        print("PREEMPTED" if taken else open(state_file).read())
      else:
        # The first TPU is preempted as soon as anyone looks; the second one stays up.
        print("PREEMPTED" if creates == 1 else open(state_file).read())
    elif verb == "scp":
      remote = args[5].split(":", 1)[1]
      shutil.copy(args[4], os.path.join(home, remote))
    elif verb == "ssh":
      command = [a for a in args if a.startswith("--command=")][0][len("--command="):]
      os.chdir(home)
      os.execvp("bash", ["bash", "-c", command])
    """)

FAKE_PYTHON = textwrap.dedent("""\
    #!/bin/sh
    # The workers' python3: pip is a no-op here (no network), everything else is real Python.
    if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then echo "fake pip $*"; exit 0; fi
    exec {python} "$@"
    """)


def _fake_cloud(tmp_path):
  """A fake gcloud and remote python3 (stand-ins for Google's services) and a tiny repo.

  Returns:
    (state dir the fake gcloud records calls in, gcloud path, python path, repo dir, env).
  """
  state = tmp_path / "gcloud_state"
  state.mkdir()
  gcloud = tmp_path / "gcloud"
  gcloud.write_text(FAKE_GCLOUD.format(python=sys.executable))
  gcloud.chmod(0o755)
  python = tmp_path / "python3"
  python.write_text(FAKE_PYTHON.format(python=sys.executable))
  python.chmod(0o755)
  repo = tmp_path / "repo"
  repo.mkdir()
  (repo / "setup.py").write_text("# stand-in\n")
  env = dict(os.environ, FAKE_GCLOUD_DIR=str(state), TMPDIR=str(tmp_path))
  return state, gcloud, python, repo, env


def test_run_recreates_preempted_spot_tpu_and_deletes_on_exit(tmp_path):
  state, gcloud, python, repo, env = _fake_cloud(tmp_path)
  (repo / "argv_echo.py").write_text(ECHO_PROGRAM)
  hostile = HOSTILE_OVERRIDES[1]
  proc = subprocess.run(
      [sys.executable, LAUNCHER, "run", "--name=vae-spot", "--zone=z", "--accelerator_type=v4-8",
       "--spot", "--max_restarts=1", "--delete_on_exit", "--poll_seconds=0.2",
       "--config=configs/mnist.py", "--workdir=/tmp/w", f"--gcloud={gcloud}",
       f"--remote_python={python}", "--train_module=argv_echo", f"--repo={repo}", hostile],
      capture_output=True, text=True, timeout=60, env=env)
  assert proc.returncode == 0, proc.stderr

  calls = [json.loads(l) for l in (state / "calls.jsonl").read_text().splitlines()]
  verbs = [c[3] for c in calls]
  # First TPU: created, set up, trained, found preempted, deleted; then all again, then deleted.
  assert verbs.count("create") == 2
  assert verbs.index("delete") > verbs.index("describe")
  assert verbs[-1] == "delete"
  starts = [c for c in calls if c[3] == "ssh" and "start" in shlex.split(
      [a for a in c if a.startswith("--command=")][0][len("--command="):])[3:4]]
  assert len(starts) == 2
  assert not (state / "vm").exists()  # Deleted on exit.
  assert "Restart 1 of 1" in proc.stderr


def test_run_reports_training_failure_without_restarting(tmp_path):
  state, gcloud, python, repo, env = _fake_cloud(tmp_path)
  # Pretend the first TPU was already recreated once, so it is never "preempted".
  (state / "creates").write_text("1")
  (repo / "fails.py").write_text("import sys\nsys.exit(7)\n")
  proc = subprocess.run(
      [sys.executable, LAUNCHER, "run", "--name=vae-fail", "--zone=z", "--accelerator_type=v4-8",
       "--spot", "--max_restarts=3", "--poll_seconds=0.2", "--nofollow_logs",
       "--config=configs/mnist.py", "--workdir=/tmp/w", f"--gcloud={gcloud}",
       f"--remote_python={python}", "--train_module=fails", f"--repo={repo}"],
      capture_output=True, text=True, timeout=60, env=env)
  assert proc.returncode == 7, proc.stderr
  verbs = [json.loads(l)[3] for l in (state / "calls.jsonl").read_text().splitlines()]
  assert verbs.count("create") == 1 and "delete" not in verbs


NOTICE_PROGRAM = textwrap.dedent("""\
    # Stand-in trainer: the first run saves "step 10" and stops on a preemption notice (143);
    # the run after it resumes from there and finishes.
    import os, sys
    workdir = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--workdir=")][0]
    saved = os.path.join(workdir, "saved_step")
    if os.path.exists(saved):
      print("resumed from step", open(saved).read())
      sys.exit(0)
    os.makedirs(workdir, exist_ok=True)
    open(saved, "w").write("10")
    sys.exit(143)
    """)


@pytest.mark.parametrize("node_taken", [True, False])
def test_run_restarts_training_that_stopped_on_a_preemption_notice(tmp_path, node_taken):
  state, gcloud, python, repo, env = _fake_cloud(tmp_path)
  if node_taken:
    env["FAKE_PREEMPT"] = "after_notice"
  else:
    (state / "creates").write_text("1")  # This node is never taken: training restarts on it.
  (repo / "notice.py").write_text(NOTICE_PROGRAM)
  workdir = tmp_path / "bucket" / "run"  # Outlives the TPU, as gs:// does.
  proc = subprocess.run(
      [sys.executable, LAUNCHER, "run", "--name=vae-notice", "--zone=z",
       "--accelerator_type=v4-8", "--spot", "--max_restarts=2", "--poll_seconds=0.2",
       "--notice_wait_seconds=1", "--nofollow_logs", "--config=configs/mnist.py",
       f"--workdir={workdir}", f"--gcloud={gcloud}", f"--remote_python={python}",
       "--train_module=notice", f"--repo={repo}"],
      capture_output=True, text=True, timeout=60, env=env)
  # Exit 143 is "saved, start me again", never a finished run and never a failure.
  assert proc.returncode == 0, proc.stderr
  assert "preemption notice (status 143)" in proc.stderr
  assert "Restart 1 of 2" in proc.stderr and "Training finished." in proc.stderr
  verbs = [json.loads(l)[3] for l in (state / "calls.jsonl").read_text().splitlines()]
  assert verbs.count("create") == (2 if node_taken else 1)
  assert (workdir / "saved_step").read_text() == "10"


# The TPU table of BUILD_NOTES.md, row by row: what `create`, `setup` and `train` do.
TPU_TABLE = [
    # accelerator, runtime image, one host?
    ("v4-8", "tpu-ubuntu2204-base", True),
    ("v4-32", "tpu-vm-tf-2.18.0-pod-pjrt-v5p-and-below", False),
    ("v5litepod-8", "v2-alpha-tpuv5-lite", True),
    ("v5litepod-16", "tpu-vm-tf-2.18.0-pod-pjrt-v5e-and-v6", False),
    ("v5p-8", "v2-alpha-tpuv5", True),
    ("v5p-16", "tpu-vm-tf-2.18.0-pod-pjrt-v5p-and-below", False),
    ("v6e-8", "v2-alpha-tpuv6e", True),
    ("v6e-16", "tpu-vm-tf-2.18.0-pod-pjrt-v5e-and-v6", False),
]
RUNTIME_IMAGE = "gcr.io/example/grpc_tpu_worker:tf-2.20.0"


@pytest.mark.parametrize("accelerator,image,one_host", TPU_TABLE)
def test_dry_run_follows_the_tpu_table(accelerator, image, one_host):
  cmds = dry_run("create", "setup", "train", *COMMON, f"--accelerator_type={accelerator}",
                 "--workdir=gs://bucket/runs/mnist", "--data_dir=gs://bucket/tfds",
                 *([] if one_host else [f"--tpu_runtime_image={RUNTIME_IMAGE}"]))
  (create,) = gcloud_cmds(cmds, "tpu-vm", "create")
  assert flag_value(create, "--version") == image
  ssh = gcloud_cmds(cmds, "tpu-vm", "ssh")
  setup, train = ssh[0], ssh[-1]
  install = flag_value(setup, "--command")
  # tensorflow-tpu from the `tpu` extra, alone: other TensorFlow builds removed first.
  assert "pip uninstall --quiet --yes tensorflow tensorflow-cpu tf-nightly" in install
  assert "VAE_DIST_TF_PROVIDED=1" in install and ".[tpu]" in install
  payload = remote_commands.decode_payload(flag_value(train, "--command"))
  if one_host:
    # The program on the only worker, the local TPU; it sets the PJRT variables itself.
    assert len(ssh) == 2 and ("--worker=all" in train or "--worker=0" in train)
    assert "--tpu=local" in payload["argv"] and payload["env"] == {}
  else:
    # Every host's TPU runtime runs the client's TensorFlow; the client drives the slice from
    # worker 0 by name, without loading libtpu.
    switch = flag_value(ssh[1], "--command")
    assert "--worker=all" in ssh[1]
    assert f"TF_DOCKER_URL={RUNTIME_IMAGE}" in switch and tpu_table.TPU_RUNTIME_UNIT in switch
    assert "systemctl restart tpu-runtime" in switch
    assert "--worker=0" in train and "--tpu=vae-test" in payload["argv"]
    assert payload["env"] == {"TPU_NAME": "vae-test", "TPU_LOAD_LIBRARY": "0"}
  assert "--config.data_dir=gs://bucket/tfds" in payload["argv"]


@pytest.mark.parametrize("flag", ["--workdir=/home/me/run", "--data_dir=/home/me/tfds",
                                  "--config.data_dir=/home/me/tfds"])
def test_slice_refuses_local_paths_its_hosts_read(flag):
  args = ["--workdir=gs://bucket/run", "--data_dir=gs://bucket/tfds"]
  args = [flag if a.split("=")[0] == flag.split("=")[0] else a for a in args]
  if flag not in args:
    args.append(flag)
  _, err, rc = launch("--dry_run", "train", *COMMON, "--accelerator_type=v4-32", *args,
                      check=False)
  assert rc != 0 and flag.split("=")[0] in err and "gs://" in err

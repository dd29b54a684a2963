"""The launcher's steps on a TPU VM (create, setup, train, logs, status, stop, delete, run), and
the runner that executes or, in a dry run, prints their gcloud commands.
"""
import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Optional, Sequence, Tuple

from absl import logging

try:  # Imported as a package (tests, python -m launch.NAME).
  from launch import remote_commands
  from launch.tpu_table import LaunchError
except ImportError:  # Run as a script: launch/ itself is sys.path[0].
  import remote_commands
  from tpu_table import LaunchError


class Runner:
  """Runs commands, or with dry_run prints them and pretends they succeeded.

  In a dry run, queries answer as a healthy TPU would (READY / ACTIVE / EXITED 0), so `run`
  walks its whole sequence once and prints each command it would issue.
  """

  def __init__(self, dry_run: bool, out=None):
    self.dry_run = dry_run
    self.out = out or sys.stdout

  def _show(self, cmd: Sequence[str]) -> None:
    if self.dry_run:
      print(shlex.join(cmd), file=self.out, flush=True)
    else:
      logging.info("+ %s", shlex.join(cmd))

  def call(self, cmd: Sequence[str]) -> int:
    self._show(cmd)
    if self.dry_run:
      return 0
    return subprocess.call(list(cmd))

  def check(self, cmd: Sequence[str]) -> None:
    rc = self.call(cmd)
    if rc != 0:
      raise LaunchError(f"Command failed with status {rc}: {shlex.join(cmd)}")

  def output(self, cmd: Sequence[str], dry_answer: str = "") -> Tuple[int, str, str]:
    """(status, stdout, stderr) of cmd; in a dry run (0, dry_answer, '')."""
    self._show(cmd)
    if self.dry_run:
      return 0, dry_answer, ""
    proc = subprocess.run(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          errors="replace")
    if proc.returncode != 0:
      logging.warning("Status %d from %s: %s", proc.returncode, shlex.join(cmd),
                      proc.stderr.strip()[-2000:])
    return proc.returncode, proc.stdout, proc.stderr

  def background(self, cmd: Sequence[str]) -> Optional[subprocess.Popen]:
    self._show(cmd)
    if self.dry_run:
      return None
    # Its own process group, so that stopping it also stops the ssh that gcloud started.
    return subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, start_new_session=True)


# What vae_dist.main exits with after saving on a preemption notice (vae_dist/train/preemption.py).
RESTARTABLE_EXIT_CODE = 143
# TPU node states after which the node will not run anything again: it has to be recreated.
_GONE_STATES = ("PREEMPTED", "TERMINATED")
_QUEUED_FAILED_STATES = ("FAILED", "SUSPENDED", "SUSPENDING")


class Steps:
  """The steps, each a method named like the step, for one tpu_vm.Plan."""

  def __init__(self, plan, runner: Runner, poll_seconds: float, max_restarts: int,
               delete_on_exit: bool, follow_logs: bool, queued_timeout: float,
               notice_wait: float = 180.0):
    self.notice_wait = notice_wait
    self.plan = plan
    self.runner = runner
    self.poll_seconds = 0.0 if runner.dry_run else poll_seconds
    self.max_restarts = max_restarts
    self.delete_on_exit = delete_on_exit
    self.follow_logs = follow_logs
    self.queued_timeout = queued_timeout

  def _sleep(self) -> None:
    time.sleep(self.poll_seconds)

  def create(self) -> int:
    self.runner.check(self.plan.create_command())
    if self.plan.queued_resource:
      self._wait_queued_active()
    return 0

  def _wait_queued_active(self) -> None:
    deadline = time.time() + self.queued_timeout
    while True:
      rc, out, _ = self.runner.output(self.plan.queued_state_command(), dry_answer="ACTIVE")
      state = out.strip().splitlines()[-1].strip() if rc == 0 and out.strip() else ""
      if state == "ACTIVE":
        return
      if state in _QUEUED_FAILED_STATES:
        raise LaunchError(f"Queued resource {self.plan.name} is {state}.")
      if time.time() > deadline:
        raise LaunchError(f"Queued resource {self.plan.name} not ACTIVE after "
                          f"{self.queued_timeout:.0f} s (last state {state or 'unknown'}).")
      logging.info("Queued resource %s: %s; waiting.", self.plan.name, state or "unknown")
      self._sleep()

  def setup(self) -> int:
    for cmd in self.plan.setup_commands():
      self.runner.check(cmd)
    return 0

  def train(self) -> int:
    logging.info("Training command on worker(s) %s: %s (env %s)", self.plan.train_worker,
                 shlex.join(self.plan.train_argv), self.plan.train_env)
    self.runner.check(self.plan.train_command())
    return 0

  def logs(self) -> int:
    return self.runner.call(self.plan.logs_command())

  def status(self) -> int:
    rc, out, _ = self.runner.output(self.plan.status_command(), dry_answer="EXITED 0")
    if not self.runner.dry_run:
      print(out.strip())
    return rc

  def stop(self) -> int:
    return self.runner.call(self.plan.stop_command())

  def delete(self) -> int:
    return self.runner.call(self.plan.delete_command())

  def _state(self) -> str:
    """The node's state (READY, PREEMPTED, ...), NOT_FOUND or UNKNOWN.

    NOT_FOUND: the node is gone (deleted, e.g. a reclaimed Spot queued resource). UNKNOWN:
    `describe` failed for another reason, e.g. the network.
    """
    rc, out, err = self.runner.output(self.plan.state_command(), dry_answer="READY")
    lines = out.strip().splitlines()
    if rc == 0 and lines:
      return lines[-1].strip()
    return "NOT_FOUND" if "NOT_FOUND" in err or "not found" in err.lower() else "UNKNOWN"

  def _wait_for_outcome(self) -> Tuple[str, Optional[int]]:
    """Polls until training ends or the TPU goes away.

    Returns:
      ('succeeded', 0), ('failed', exit code), ('preempted', None), ('lost', None) (the node is
      READY but the training process vanished without an exit status, e.g. a host restart) or
      ('restartable', None) (training saved and stopped on a preemption notice, and the node
      stayed up).
    """
    ssh_failures = describe_failures = 0
    while True:
      state = self._state()
      if state in _GONE_STATES or state == "NOT_FOUND":
        logging.warning("TPU %s is %s.", self.plan.name, state)
        return "preempted", None
      # A failing `describe` alone is no reason to delete a TPU that may be training fine.
      describe_failures = describe_failures + 1 if state == "UNKNOWN" else 0
      if describe_failures >= 10:
        raise LaunchError(f"`describe` of TPU {self.plan.name} failed 10 times in a row.")
      if state == "READY":
        rc, out, _ = self.runner.output(self.plan.status_command(), dry_answer="EXITED 0")
        kind, value = remote_commands.parse_status(out) if rc == 0 else ("UNKNOWN", None)
        if kind == "EXITED" and value == RESTARTABLE_EXIT_CODE:
          return self._after_preemption_notice()
        if kind == "EXITED":
          # A preemption kills training too: only trust a failure while the node is still up.
          if value != 0 and self._state() != "READY":
            return "preempted", None
          return ("succeeded", 0) if value == 0 else ("failed", value)
        if kind in ("LOST", "NOT_STARTED"):
          return "lost", None
        if kind == "RUNNING":
          ssh_failures = 0
        else:
          ssh_failures += 1
          logging.warning("Could not read the training status (ssh status %d).", rc)
          if ssh_failures >= 10:
            raise LaunchError("Lost contact with worker 0: 10 status checks failed in a row.")
      self._sleep()

  def _after_preemption_notice(self) -> Tuple[str, Optional[int]]:
    """Training saved and stopped on a notice: the node is about to go, or it stays up."""
    logging.warning("Training stopped on a preemption notice (status %d); waiting up to %.0f s "
                    "for TPU %s to be taken.", RESTARTABLE_EXIT_CODE, self.notice_wait,
                    self.plan.name)
    deadline = time.time() + self.notice_wait
    while True:
      state = self._state()
      if state in _GONE_STATES or state == "NOT_FOUND":
        logging.warning("TPU %s is %s.", self.plan.name, state)
        return "preempted", None
      if time.time() >= deadline or self.runner.dry_run:
        return "restartable", None
      self._sleep()

  def run(self) -> int:
    restarts = 0
    follower = None
    try:
      self.create()
      self.setup()
      self.train()
      while True:
        if self.follow_logs:
          follower = self.runner.background(self.plan.logs_command("0"))
        outcome, code = self._wait_for_outcome()
        _stop_process(follower)
        follower = None
        if outcome == "succeeded":
          logging.info("Training finished.")
          return 0
        if outcome == "failed":
          logging.error("Training exited with status %d.", code)
          return code or 1
        if restarts >= self.max_restarts:
          logging.error("TPU %s was %s and --max_restarts=%d is used up.", self.plan.name,
                        "preempted" if outcome == "preempted" else "restarted", self.max_restarts)
          return RESTARTABLE_EXIT_CODE if outcome == "restartable" else 1
        restarts += 1
        logging.warning("Restart %d of %d: training resumes from %s.", restarts,
                        self.max_restarts, self.plan.workdir)
        if outcome == "preempted":
          # A preempted node cannot be restarted, only deleted and created again.
          self.delete()
          self.create()
          self.setup()
        self.train()
    finally:
      _stop_process(follower)
      if self.delete_on_exit:
        self.delete()


def _stop_process(proc: Optional[subprocess.Popen]) -> None:
  """Stops a process from Runner.background and everything in its process group."""
  if proc is None:
    return
  for sig in (signal.SIGTERM, signal.SIGKILL):
    try:
      os.killpg(proc.pid, sig)
    except ProcessLookupError:
      break
    try:
      proc.wait(timeout=10)
      break
    except subprocess.TimeoutExpired:
      continue
  proc.wait()


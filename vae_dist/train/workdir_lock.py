"""One run per workdir: a second `main` on a busy workdir stops, naming the run that holds it.

Two runs writing one workdir would interleave checkpoints, metrics and event files and delete each
other's checkpoints through retention; nothing good comes of it.

- Local (and NFS) workdirs: an exclusive `flock` on `<workdir>/lock`. The kernel releases it when
  the process ends in any way, SIGKILL included, so a killed run never blocks its own restart.
- Object stores (gs://, ...), which have no locks: a lease. The holder writes `<workdir>/lock`
  (host, pid, start time) and rewrites it every HEARTBEAT_SECONDS from a background thread; a
  lease whose heartbeat is older than STALE_SECONDS, or that names this host and a process that
  no longer runs, belongs to a run that is gone and is taken over with a log line. Two runs that
  start within the same second can both win; the lease is for mistakes, not for adversaries.

The file holds JSON so that the refusal can say who holds the workdir.
"""
import datetime
import errno
import json
import os
import socket
import sys
import threading
import time
from typing import Optional

from absl import logging
import tensorflow as tf

from vae_dist.errors import first_line
from vae_dist.errors import WorkdirError
from vae_dist import fileio
from vae_dist import run_files

HEARTBEAT_SECONDS = 60.0
STALE_SECONDS = 300.0


def _describe_holder(holder: dict) -> str:
  started = holder.get("started")
  when = (datetime.datetime.fromtimestamp(started, datetime.timezone.utc)
          .strftime("%Y-%m-%d %H:%M:%S UTC") if isinstance(started, (int, float)) else "?")
  return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {when}: "
          f"{holder.get('command', '?')}")


def _pid_running(pid) -> bool:
  try:
    os.kill(int(pid), 0)
  except ProcessLookupError:
    return False
  except (PermissionError, ValueError, TypeError):
    return True  # Exists but belongs to someone else, or unreadable: assume it runs.
  return True


class WorkdirLock:
  """Holds `<workdir>/lock` from acquire() to release() (or the end of the process)."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = run_files.RunDir(workdir).lock
    self._fd: Optional[int] = None
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None
    self._record = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": time.time(),
        "command": " ".join(["python -m vae_dist.main"] + sys.argv[1:])[:500],
    }

  def acquire(self) -> None:
    """Creates the workdir if needed and takes the lock.

    Raises:
      WorkdirError: the workdir cannot be created or written, or another run holds it.
    """
    try:
      tf.io.gfile.makedirs(self.workdir)
    except (tf.errors.OpError, OSError) as e:
      raise WorkdirError(
          f"cannot create the workdir {self.workdir}: {_reason(e)}. Choose a writable "
          "location with --workdir.") from None
    if fileio.is_local(self.workdir):
      self._acquire_flock()
    else:
      self._acquire_lease()

  def release(self) -> None:
    if self._thread is not None:
      self._stop.set()
      self._thread.join()
      self._thread = None
      try:
        tf.io.gfile.remove(self.path)
      except tf.errors.OpError:
        pass  # Gone already or unreachable: the lease goes stale on its own.
    if self._fd is not None:
      # The file stays (removing it would race with a run about to lock it); the lock goes.
      os.close(self._fd)
      self._fd = None

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()

  # ---- local: flock ------------------------------------------------------------------------------

  def _acquire_flock(self) -> None:
    import fcntl  # pylint: disable=g-import-not-at-top  # POSIX only; object stores need none.
    path = self.path[len("file://"):] if self.path.startswith("file://") else self.path
    try:
      fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise WorkdirError(f"cannot write to the workdir {self.workdir}: {_reason(e)}. Choose a "
                         "writable location with --workdir.") from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      holder = _read_json_fd(fd)
      os.close(fd)
      if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
        raise WorkdirError(f"cannot lock {path}: {_reason(e)}.") from None
      raise WorkdirError(
          f"the workdir {self.workdir} is in use by another run ({_describe_holder(holder)}). "
          "Wait for it to finish or stop it, or choose another --workdir.") from None
    try:
      data = json.dumps(self._record).encode()
      os.ftruncate(fd, 0)
      _write_all(fd, data)
      os.fsync(fd)
    except OSError as e:
      os.close(fd)
      raise WorkdirError(f"cannot write to the workdir {self.workdir}: {_reason(e)}. Free space "
                         "or choose another location with --workdir.") from None
    self._fd = fd

  # ---- object stores: a lease with a heartbeat ---------------------------------------------------

  def _acquire_lease(self) -> None:
    holder = self._read_lease()
    if holder is not None:
      age = time.time() - float(holder.get("heartbeat", 0))
      gone_here = (holder.get("host") == self._record["host"] and
                   not _pid_running(holder.get("pid")))
      if age < STALE_SECONDS and not gone_here:
        raise WorkdirError(
            f"the workdir {self.workdir} is in use by another run ({_describe_holder(holder)}; "
            f"last heartbeat {age:.0f} s ago). Wait for it to finish or stop it, or choose "
            f"another --workdir. If that run is gone, delete {self.path} or wait "
            f"{STALE_SECONDS - age:.0f} s.")
      logging.warning("Taking over the workdir lease of a run that is gone (%s).",
                      _describe_holder(holder))
    self._write_lease()
    self._thread = threading.Thread(target=self._heartbeat, name="workdir-lease", daemon=True)
    self._thread.start()

  def _read_lease(self) -> Optional[dict]:
    try:
      with tf.io.gfile.GFile(self.path, "rb") as f:
        return json.loads(f.read() or b"{}")
    except tf.errors.NotFoundError:
      return None
    except (tf.errors.OpError, ValueError):
      return {}  # Unreadable: treated as stale (heartbeat 0).

  def _write_lease(self) -> None:
    try:
      fileio.write_text_atomic(self.path, json.dumps({**self._record, "heartbeat": time.time()}))
    except tf.errors.OpError as e:
      raise WorkdirError(f"cannot write to the workdir {self.workdir}: {_reason(e)}.") from None

  def _heartbeat(self) -> None:
    while not self._stop.wait(HEARTBEAT_SECONDS):
      try:
        self._write_lease()
      except WorkdirError as e:  # A blip on the object store: the next beat tries again.
        logging.warning("Workdir lease heartbeat failed: %s", e)


def _write_all(fd: int, data: bytes) -> None:
  """pwrite until done: a full disk first shows as a short write, the next call names the error."""
  done = 0
  while done < len(data):
    n = os.pwrite(fd, data[done:], done)
    if n == 0:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    done += n


def _read_json_fd(fd: int) -> dict:
  try:
    return json.loads(os.pread(fd, 4096, 0) or b"{}")
  except (OSError, ValueError):
    return {}


def _reason(error: Exception) -> str:
  if isinstance(error, OSError) and error.strerror:
    return error.strerror
  return first_line(error)

"""Ctrl-C stops a command within seconds, even while TensorFlow runs one long computation.

Python runs a signal's handler only between bytecodes of the main thread. While the main thread
is inside one long TensorFlow call (an IWAE step with a large K, a long host loop, a big export
trace) the KeyboardInterrupt waits until that call returns, which can be minutes. The C-level
handler Python installs still writes each signal's number to the "wakeup fd" at once, whatever the
main thread is doing; a thread reading that fd sees every Ctrl-C when it happens.

The watch counts Ctrl-Cs. When the one that should stop the process (the first, or the second
while a training loop turns the first into "save at the next boundary") has not ended it within
GRACE_SECONDS, the watch prints the command's one interrupted line and ends the process with
status 130. Ending it there is as safe as a kill: every write of a run is atomic (commit by
rename), so nothing committed is lost or left half-written.
"""
import os
import signal
import sys
import threading

# Time the main thread gets to stop by itself (KeyboardInterrupt unwinding, flushing writers).
GRACE_SECONDS = 3.0

_state = {"needed": 1, "seen": 0, "handled": False, "message": "", "exit_code": 130,
          "listener": None}
_lock = threading.Lock()
_stop_requested = threading.Event()


def start(message: str, exit_code: int) -> None:
  """Watches Ctrl-C for the rest of the process. Call from the main thread.

  Args:
    message: the line printed on stderr when the watch ends the process.
    exit_code: the status it ends the process with.
  """
  if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    return  # Started with Ctrl-C ignored (`cmd &`, nohup): nothing to watch.
  read_end, write_end = os.pipe()
  os.set_blocking(write_end, False)  # The C handler must never block on a full pipe.
  try:
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
  except ValueError:  # Not the main thread (a test runner's thread): Python's handling stays.
    os.close(read_end)
    os.close(write_end)
    return
  _state.update(message=message, exit_code=exit_code)
  threading.Thread(target=_watch, args=(read_end,), name="ctrl-c-watch", daemon=True).start()


def needs(count: int) -> None:
  """How many Ctrl-Cs stop the process from now on (2 while a loop saves on the first)."""
  with _lock:
    _state["needed"] = _state["seen"] + count


def listen(listener) -> None:
  """Calls listener() from the watch's thread at each Ctrl-C, as it arrives (None: no one).

  Python runs its own handler only once the main thread returns from TensorFlow, which in a
  long host loop is minutes later; a listener can answer the user at once.
  """
  with _lock:
    _state["listener"] = listener


def handled() -> None:
  """The main thread is stopping for the Ctrl-C itself: the watch stands down."""
  with _lock:
    _state["handled"] = True


def _watch(read_end: int) -> None:
  while True:
    try:
      received = os.read(read_end, 64)
    except OSError:
      return
    count = received.count(bytes([signal.SIGINT]))
    with _lock:
      _state["seen"] += count
      due = _state["seen"] >= _state["needed"]
      listener = _state["listener"]
    if count and listener is not None:
      listener()
    if due:
      threading.Thread(target=_end_if_still_running, name="ctrl-c-grace", daemon=True).start()


def _end_if_still_running() -> None:
  if _stop_requested.is_set():
    return  # Already counting down.
  _stop_requested.set()
  threading.Event().wait(GRACE_SECONDS)
  with _lock:
    if _state["handled"]:
      return
  # Still inside a long TensorFlow call: the main thread cannot be reached; end here.
  sys.stderr.write(_state["message"] + "\n")
  sys.stderr.flush()
  os._exit(_state["exit_code"])  # pylint: disable=protected-access

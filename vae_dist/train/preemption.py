"""Notice that this machine is about to go away: SIGTERM, and on Google Cloud the metadata server.

A run that gets a notice saves a checkpoint at the next host-loop boundary and exits with
RESTARTABLE_EXIT_CODE, so launchers (launch/tpu_vm.py, launch/multiworker.py, Slurm, Kubernetes)
start it again instead of taking it for a finished run.

Spot and preemptible VMs, Cloud TPU VMs included, are told through their metadata server
(`instance/preempted` turns TRUE; a host about to be stopped for maintenance shows
`instance/maintenance-event` = TERMINATE_ON_HOST_MAINTENANCE) as well as by the SIGTERM of the
guest shutdown, which may come late. TensorFlow's PreemptionCheckpointHandler watches the
metadata server only on GCE GPU hosts (on TPU and CPU hosts it logs that it is unsupported and
does nothing, TF 2.21), so the watch is done here. The server's address is TensorFlow's:
$GCE_METADATA_IP (host[:port]), else metadata.google.internal on a Google Cloud VM.
"""
import os
import signal
import threading
import urllib.error
import urllib.request

from absl import logging

from vae_dist import ctrl_c

# What TensorFlow's own preemption handler exits with on Google Cloud: "stopped, start again".
RESTARTABLE_EXIT_CODE = 143

_NOTICES = (("instance/preempted", "TRUE"),
            ("instance/maintenance-event", "TERMINATE_ON_HOST_MAINTENANCE"))


def metadata_address(environ=os.environ, product_name_file="/sys/class/dmi/id/product_name"):
  """host[:port] of the metadata server, or None off Google Cloud."""
  address = environ.get("GCE_METADATA_IP") or environ.get("GCE_METADATA_HOST")
  if address:
    return address
  try:
    with open(product_name_file) as f:
      if "Google" in f.read():
        return "metadata.google.internal"
  except OSError:
    pass
  return None


def read_notice(address: str, timeout: float = 2.0):
  """The metadata server's preemption or maintenance notice ('preempted', ...), or None."""
  for key, value in _NOTICES:
    request = urllib.request.Request(f"http://{address}/computeMetadata/v1/{key}",
                                     headers={"Metadata-Flavor": "Google"})
    try:
      with urllib.request.urlopen(request, timeout=timeout) as response:
        if response.read().decode().strip() == value:
          return key.rsplit("/", 1)[-1]
    except (urllib.error.URLError, OSError, ValueError):
      continue  # No answer is no notice; the next poll asks again.
  return None


class PreemptionWatch:
  """Turns SIGTERM, Ctrl-C and the metadata server's notices into "save and stop at the next
  boundary".

  A second Ctrl-C stops at once (KeyboardInterrupt, or ctrl_c's watch when the main thread is
  inside a long TensorFlow call; without saving: the last committed checkpoint stays the run's
  latest).

  Args (keyword-only):
    address: the metadata server (metadata_address()); None watches SIGTERM only.
    poll_seconds: how often the metadata server is asked.
  """

  def __init__(self, *, address=None, poll_seconds: float = 5.0):
    self.reason = None  # 'SIGTERM', 'preempted' or 'maintenance-event' once noticed.
    self._address = address
    self._poll_seconds = poll_seconds
    self._previous = None
    self._previous_sigint = None
    self._done = threading.Event()
    self._thread = None
    self._sigints = 0  # Ctrl-Cs Python's handler has run for.
    self._ack_lock = threading.Lock()
    self._ctrl_c_acknowledged = False

  @property
  def requested(self) -> bool:
    return self.reason is not None

  def start(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
      # A process started with SIGINT ignored (`cmd &` in a script, nohup) keeps ignoring it.
      if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)
        ctrl_c.needs(2)  # The first one saves at the boundary; the second stops at once.
        ctrl_c.listen(self._acknowledge_ctrl_c)
    except ValueError:  # Not the main thread (e.g. inside a test runner thread).
      pass
    if self._address:
      logging.info("Watching the metadata server at %s for preemption notices.", self._address)
      self._thread = threading.Thread(target=self._poll, name="preemption-watch", daemon=True)
      self._thread.start()

  def _on_sigterm(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM received: saving a checkpoint at the next step boundary.")
    self.reason = self.reason or "SIGTERM"

  def _on_sigint(self, signum, frame):
    del signum, frame
    self._sigints += 1
    if self._sigints > 1:  # The second one: stop now.
      signal.signal(signal.SIGINT, signal.default_int_handler)
      raise KeyboardInterrupt
    self._acknowledge_ctrl_c()

  def _acknowledge_ctrl_c(self):
    # Called by ctrl_c's watch the moment Ctrl-C is pressed (the main thread may be inside a
    # host loop for minutes), and by Python's handler once the main thread gets it; says it once.
    with self._ack_lock:
      if self._ctrl_c_acknowledged:
        return
      self._ctrl_c_acknowledged = True
      logging.warning("Ctrl-C: saving a checkpoint at the next step boundary, then stopping "
                      "(Ctrl-C again stops at once, without saving).")
      self.reason = self.reason or "Ctrl-C"

  def _poll(self):
    while True:
      notice = read_notice(self._address)
      if notice:
        logging.warning("The metadata server announces %s: saving a checkpoint at the next "
                        "step boundary.", notice)
        self.reason = self.reason or notice
        return
      if self._done.wait(self._poll_seconds):
        return

  def stop(self):
    self._done.set()
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    if self._previous_sigint is not None:
      signal.signal(signal.SIGINT, self._previous_sigint)
      ctrl_c.needs(1)
      ctrl_c.listen(None)

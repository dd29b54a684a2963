"""Runs commands against a GCS stand-in through TensorFlow's own GCS client, in a namespace.

TensorFlow's GCS client has its endpoints compiled in (https://www.googleapis.com/storage/v1/,
/upload/storage/v1/, and storage.googleapis.com for downloads). It honours CURL_CA_BUNDLE and
GOOGLE_AUTH_TOKEN_FOR_TESTING, so inside a private network + mount namespace where those names
resolve to 127.0.0.1 and a certificate we made is trusted, it talks to tests/gcs/emulator.py.
Nothing leaves the namespace: its loopback is its own, and 127.0.0.1:443 of the machine is
never touched.

    ns = GcsNamespace(tmp_dir, buckets=["b"])
    ns.start()                       # raises Unavailable (with the reason) without namespaces
    ns.run([sys.executable, "-m", "vae_dist.main", "--workdir=gs://b/run", ...])
    ns.stats()["uploaded"]           # bytes uploaded per object
    ns.set_faults(rate=0.2, mode="503")
    ns.stop()
"""
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse

import cli

ROOT = cli.ROOT
GCS_HOSTS = ("www.googleapis.com", "storage.googleapis.com")


class Unavailable(Exception):
  """Namespaces (or a tool they need) are not available here: the gs:// tests are skipped."""


def unavailable_reason():
  """Why the namespace cannot be made here, or None when it can."""
  if sys.platform != "linux":
    return "gs:// tests need Linux network and mount namespaces"
  if os.geteuid() != 0:
    return "gs:// tests need root for `unshare -n -m` (network + mount namespaces); not root here"
  for tool in ("unshare", "nsenter", "ip", "mount", "openssl"):
    if shutil.which(tool) is None:
      return f"gs:// tests need `{tool}` (make test installs util-linux, iproute2 and openssl)"
  return None


class _UnixConnection(http.client.HTTPConnection):

  def __init__(self, path, timeout=30):
    super().__init__("localhost", timeout=timeout)
    self._path = path

  def connect(self):
    self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    self.sock.settimeout(self.timeout)
    self.sock.connect(self._path)


def _make_certificate(directory):
  cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
  subprocess.run(
      ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
       "-subj", "/CN=www.googleapis.com", "-keyout", key, "-out", cert,
       "-addext", "subjectAltName=" + ",".join(f"DNS:{h}" for h in GCS_HOSTS)],
      check=True, capture_output=True)
  return cert, key


class GcsNamespace:
  """A network + mount namespace holding a GCS emulator; commands run inside it."""

  def __init__(self, directory, *, buckets=("vae-test",)):
    self.directory = directory
    self.buckets = list(buckets)
    self.proc = None
    self.control_path = os.path.join(directory, "control.sock")

  # ---- life --------------------------------------------------------------------------------------

  def start(self, timeout=30):
    reason = unavailable_reason()
    if reason:
      raise Unavailable(reason)
    os.makedirs(self.directory, exist_ok=True)
    self.cert, key = _make_certificate(self.directory)
    hosts = os.path.join(self.directory, "hosts")
    with open(hosts, "w") as f:
      f.write("127.0.0.1 localhost\n::1 localhost\n")
      f.write("".join(f"127.0.0.1 {h}\n" for h in GCS_HOSTS))
    if os.path.exists(self.control_path):
      os.remove(self.control_path)
    self.log_path = os.path.join(self.directory, "emulator.log")
    self._log = open(self.log_path, "w")
    args = ["unshare", "--net", "--mount", "--propagation", "private", "--",
            sys.executable, "-m", "tests.gcs.namespace_server", f"--cert={self.cert}",
            f"--key={key}", f"--hosts_file={hosts}", f"--control={self.control_path}"]
    args += [f"--bucket={b}" for b in self.buckets]
    self.proc = subprocess.Popen(args, cwd=ROOT, env=cli.env(), stdout=self._log,
                                 stderr=subprocess.STDOUT)
    deadline = time.time() + timeout
    while time.time() < deadline:
      if self.proc.poll() is not None:
        raise Unavailable("the GCS namespace did not start: " + self._log_tail())
      if os.path.exists(self.control_path):
        try:
          self._control("GET", "/stats")
          break
        except OSError:
          pass
      time.sleep(0.05)
    else:
      self.stop()
      raise RuntimeError("the GCS emulator did not come up: " + self._log_tail())
    self.assert_loopback()
    return self

  def stop(self):
    if self.proc is not None and self.proc.poll() is None:
      self.proc.terminate()
      try:
        self.proc.wait(10)
      except subprocess.TimeoutExpired:
        self.proc.kill()
        self.proc.wait()
    if self.proc is not None:
      self._log.close()
    self.proc = None

  def _log_tail(self):
    self._log.flush()
    with open(self.log_path) as f:
      return f.read()[-2000:]

  # ---- control -----------------------------------------------------------------------------------

  def _control(self, method, path, body=None, **query):
    conn = _UnixConnection(self.control_path)
    try:
      url = path + ("?" + urllib.parse.urlencode(query) if query else "")
      conn.request(method, url, body=body)
      response = conn.getresponse()
      data = response.read()
    finally:
      conn.close()
    if response.status != 200:
      raise KeyError(f"{method} {url}: {response.status} {data[:200]!r}")
    return data

  def assert_loopback(self):
    """Each GCS host name must resolve to 127.0.0.1 inside the namespace, or nothing runs."""
    for host in GCS_HOSTS:
      address = json.loads(self._control("GET", "/resolve", host=host))["address"]
      assert address == "127.0.0.1", f"{host} resolves to {address} in the namespace"

  def stats(self) -> dict:
    return json.loads(self._control("GET", "/stats"))

  def reset_stats(self):
    self._control("POST", "/reset_stats")

  def set_faults(self, **config):
    """rate, mode ("503" | "drop" | "mix"), kinds (request kinds), seed, limit; none = off."""
    self._control("POST", "/faults", json.dumps(config).encode())

  def create_bucket(self, name):
    self._control("POST", "/bucket", name=name)

  def list(self, bucket, prefix="") -> dict:
    """{object name: size} under prefix, read straight from the store."""
    return json.loads(self._control("GET", "/list", bucket=bucket, prefix=prefix))

  def read(self, bucket, name) -> bytes:
    return self._control("GET", "/object", bucket=bucket, name=name)

  def write(self, bucket, name, data: bytes):
    """Puts an object straight into the store (no TensorFlow, no faults)."""
    self._control("PUT", "/object", data, bucket=bucket, name=name)

  def request_log(self):
    return json.loads(self._control("GET", "/log"))

  # ---- commands inside the namespace -------------------------------------------------------------

  def env(self, **extra):
    return cli.env(CURL_CA_BUNDLE=self.cert, GOOGLE_AUTH_TOKEN_FOR_TESTING="test-token", **extra)

  def command(self, args):
    return ["nsenter", f"--target={self.proc.pid}", "--net", "--mount", f"--wd={ROOT}", "--",
            *args]

  def run(self, args, *, timeout=300, **env_extra):
    """Runs `args` in the namespace to its end; the CompletedProcess with text output."""
    return subprocess.run(self.command(args), cwd=ROOT, env=self.env(**env_extra),
                          capture_output=True, text=True, timeout=timeout)

  def popen(self, args, **env_extra):
    return subprocess.Popen(self.command(args), cwd=ROOT, env=self.env(**env_extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

  def python(self, code, *, timeout=120, **env_extra):
    """Runs a Python snippet in the namespace; returns its stdout (asserts it succeeded)."""
    proc = self.run([sys.executable, "-c", code], timeout=timeout, **env_extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


# ---- pytest fixtures (import both into a test module) -------------------------------------------

import pytest  # noqa: E402  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(scope="module")
def gcs_namespace(tmp_path_factory):
  """One namespace + emulator per test module (its store lives as long as the module's tests)."""
  ns = GcsNamespace(str(tmp_path_factory.mktemp("gcs")))
  try:
    ns.start()
  except Unavailable as e:
    pytest.skip(f"gs:// tests skipped: {e}")
  yield ns
  ns.stop()


@pytest.fixture
def gcs(gcs_namespace):  # pylint: disable=redefined-outer-name
  """The module's namespace, checked to resolve the GCS names to 127.0.0.1, faults off."""
  gcs_namespace.assert_loopback()
  gcs_namespace.set_faults()
  gcs_namespace.reset_stats()
  return gcs_namespace

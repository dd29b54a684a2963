"""Preemption notices from a metadata server end a run with a checkpoint and exit status 143.

The metadata server is a small real HTTP server on loopback that answers the way Google Cloud's
does (Metadata-Flavor header required); the run finds it through GCE_METADATA_IP, as TensorFlow
does.
"""
import http.server
import json
import os
import threading
import time

import pytest

import cli
from vae_dist.train import preemption


class _MetadataServer:
  """GET /computeMetadata/v1/instance/{preempted,maintenance-event}; `notice` flips them."""

  def __init__(self):
    self.notice = None  # None, 'preempted' or 'maintenance-event'.
    self.requests = 0
    server = self

    class Handler(http.server.BaseHTTPRequestHandler):

      def do_GET(self):  # pylint: disable=invalid-name
        server.requests += 1
        if self.headers.get("Metadata-Flavor") != "Google":
          self.send_error(403, "Missing Metadata-Flavor:Google header.")
          return
        values = {
            "/computeMetadata/v1/instance/preempted":
                "TRUE" if server.notice == "preempted" else "FALSE",
            "/computeMetadata/v1/instance/maintenance-event":
                "TERMINATE_ON_HOST_MAINTENANCE" if server.notice == "maintenance-event"
                else "NONE",
        }
        body = values.get(self.path.split("?")[0])
        if body is None:
          self.send_error(404)
          return
        self.send_response(200)
        self.send_header("Metadata-Flavor", "Google")
        self.end_headers()
        self.wfile.write(body.encode())

      def log_message(self, *args):
        del args

    self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.address = f"127.0.0.1:{self._httpd.server_address[1]}"
    threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

  def close(self):
    self._httpd.shutdown()
    self._httpd.server_close()


@pytest.fixture
def metadata_server():
  server = _MetadataServer()
  yield server
  server.close()


def test_notices_are_read_from_the_metadata_server(metadata_server):
  assert preemption.read_notice(metadata_server.address) is None
  metadata_server.notice = "maintenance-event"
  assert preemption.read_notice(metadata_server.address) == "maintenance-event"
  metadata_server.notice = "preempted"
  assert preemption.read_notice(metadata_server.address) == "preempted"
  # No server there: no notice, no exception (the watch keeps asking).
  metadata_server.close()
  assert preemption.read_notice(metadata_server.address, timeout=0.5) is None


def test_metadata_address_follows_tensorflow(tmp_path):
  assert preemption.metadata_address({"GCE_METADATA_IP": "10.1.2.3:80"}) == "10.1.2.3:80"
  product = tmp_path / "product_name"
  product.write_text("Google Compute Engine\n")
  assert preemption.metadata_address({}, str(product)) == "metadata.google.internal"
  product.write_text("Standard PC\n")
  assert preemption.metadata_address({}, str(product)) is None
  assert preemption.metadata_address({}, str(tmp_path / "missing")) is None


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  return cli.prepared_idx_data(str(tmp_path_factory.mktemp("preempt")), seed=6)


def test_preemption_notice_saves_exits_143_and_the_run_resumes(tmp_path, data, metadata_server):
  workdir = str(tmp_path / "run")
  loop = ["--config.steps_per_loop=5", "--config.log_every_steps=5",
          "--config.eval_every_steps=100000", "--config.checkpoint_every_steps=100000"]
  proc = cli.start_until_metrics(
      cli.main_args("configs/mnist.py:smoke", workdir, "--config.dataset=fashion_mnist", *data,
                    "--config.num_train_steps=100000", *loop),
      workdir, env=cli.env(GCE_METADATA_IP=metadata_server.address))
  deadline = time.time() + 240
  try:
    while metadata_server.requests == 0:  # The run is watching.
      assert time.time() < deadline
      time.sleep(0.1)
  except BaseException:
    proc.kill()
    raise
  metadata_server.notice = "preempted"
  out, err = cli.finish_or_kill(proc)
  assert proc.returncode == preemption.RESTARTABLE_EXIT_CODE, err[-3000:]
  [step] = cli.committed_steps(workdir)
  assert 0 < step < 100000 and step % 5 == 0
  assert f"Stopped at step {step} after preempted" in err
  assert "Traceback" not in err and f"Run stopped at step {step}" in out

  # Started again (the notice gone, as on a new VM): resumes from that step and finishes.
  metadata_server.notice = None
  again = cli.run_main("configs/mnist.py:smoke", workdir, "--config.dataset=fashion_mnist", *data,
                       f"--config.num_train_steps={step + 5}", *loop,
                       GCE_METADATA_IP=metadata_server.address)
  assert again.returncode == 0, again.stderr[-3000:]
  assert f"Resumed from {os.path.join(workdir, 'checkpoints', str(step))}" in again.stderr
  with open(os.path.join(workdir, "final_metrics.json")) as f:
    assert json.load(f)["step"] == step + 5

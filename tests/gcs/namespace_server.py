"""Runs the GCS emulator as www.googleapis.com inside a private network + mount namespace.

Started by gcs_harness as `unshare -n -m --propagation private -- python -m tests.gcs.namespace_server`.
It brings up the namespace's loopback, bind-mounts a hosts file that maps the GCS host names to
127.0.0.1 over /etc/hosts (only this mount namespace sees it), refuses to go on unless the names
resolve to 127.0.0.1, then serves TLS on 127.0.0.1:443 and the control API on a Unix socket.
Commands join the namespace with `nsenter --target <this pid> --net --mount`.
"""
import argparse
import collections
import signal
import socket
import ssl
import subprocess
import sys
import threading

from tests.gcs import emulator

HOSTS = ("www.googleapis.com", "storage.googleapis.com")


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--cert", required=True)
  parser.add_argument("--key", required=True)
  parser.add_argument("--hosts_file", required=True)
  parser.add_argument("--control", required=True)
  parser.add_argument("--bucket", action="append", default=[])
  args = parser.parse_args()

  subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
  subprocess.run(["mount", "--bind", args.hosts_file, "/etc/hosts"], check=True)
  for host in HOSTS:
    address = socket.gethostbyname(host)
    if address != "127.0.0.1":
      sys.exit(f"{host} resolves to {address}, not 127.0.0.1, inside the namespace: refusing.")

  store = emulator.Store()
  for bucket in args.bucket:
    store.create_bucket(bucket)
  faults = emulator.Faults()
  context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
  context.load_cert_chain(args.cert, args.key)
  log = collections.deque(maxlen=2000)  # The latest requests, for a test that needs to look.
  gcs = emulator.make_server(("127.0.0.1", 443), store=store, faults=faults, context=context,
                             request_log=log)
  control = emulator.make_control_server(args.control, store=store, faults=faults,
                                         request_log=log)
  threading.Thread(target=gcs.serve_forever, daemon=True).start()
  signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=control.shutdown).start())
  print("ready", flush=True)
  control.serve_forever()


if __name__ == "__main__":
  main()

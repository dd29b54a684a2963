"""Runs the real command line (`python -m vae_dist.main ...`) in a subprocess for tests."""
import json
import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def env(**extra):
  e = dict(os.environ)
  e.update({"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT, "CUDA_VISIBLE_DEVICES": ""})
  e.pop("TF_CONFIG", None)
  e.update(extra)
  return e


def main_args(config, workdir, *overrides):
  return [sys.executable, "-m", "vae_dist.main", f"--config={config}", f"--workdir={workdir}",
          *overrides]


def run_main(config, workdir, *overrides, timeout=300, **env_extra):
  """Runs main to its end; returns the CompletedProcess (stdout and stderr as text)."""
  return subprocess.run(main_args(config, workdir, *overrides), cwd=ROOT, env=env(**env_extra),
                        capture_output=True, text=True, timeout=timeout)


def data_flags(idx_dir, data_dir):
  return [f"--config.manual_dir={idx_dir}", f"--config.data_dir={data_dir}"]


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def free_ports(n):
  socks = [socket.socket() for _ in range(n)]
  for s in socks:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in socks]
  for s in socks:
    s.close()
  return ports


def tf_config(ports, index):
  return json.dumps({
      "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
      "task": {"type": "worker", "index": index},
  })

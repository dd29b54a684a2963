"""On a TPU VM the PJRT variables are set where the program starts, before TensorFlow loads.

The real check runs `import vae_dist` in a private mount namespace whose /dev holds a TPU
device file (as a v4 host has /dev/accel0, a v5e/v5p/v6e host /dev/vfio/0), with a `libtpu`
package on the path, as a pip-installed tensorflow-tpu brings.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

from vae_dist import tpu_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_variables_only_where_a_tpu_and_libtpu_exist():
  lib = "/site/libtpu/libtpu.so"
  want = {"PJRT_DEVICE": "TPU", "NEXT_PLUGGABLE_DEVICE_USE_C_API": "true",
          "TF_PLUGGABLE_DEVICE_LIBRARY_PATH": lib}
  assert tpu_env.pjrt_environment({}, ["/dev/accel0"], lib) == want
  assert tpu_env.pjrt_environment({}, [], lib) == {}  # Not a TPU VM.
  assert tpu_env.pjrt_environment({}, ["/dev/vfio/0"], None) == {}  # No libtpu installed.
  # The single-client driver of a pod slice leaves the chips to each host's TPU runtime.
  assert tpu_env.pjrt_environment({"TPU_LOAD_LIBRARY": "0"}, ["/dev/accel0"], lib) == {}
  # What the user set wins.
  assert tpu_env.pjrt_environment({"PJRT_DEVICE": "CPU"}, ["/dev/accel0"], lib) == {
      k: v for k, v in want.items() if k != "PJRT_DEVICE"}


def _in_namespace_with_tpu_device(device, script, tmp_path, extra_env=None):
  """Runs `python -c script` where /dev holds only a few real devices and a fake TPU `device`."""
  if os.geteuid() != 0 or not shutil.which("unshare"):
    pytest.skip("needs root and unshare for a private mount namespace (CI runs as root)")
  site = tmp_path / "site"
  (site / "libtpu").mkdir(parents=True)
  (site / "libtpu" / "__init__.py").write_text("")
  (site / "libtpu" / "libtpu.so").write_bytes(b"")  # Never loaded: TensorFlow is not imported.
  old = tmp_path / "olddev"
  old.mkdir()
  shell = (f"mount --bind /dev {old} && mount -t tmpfs none /dev && "
           f"for f in null zero urandom random full; do touch /dev/$f && "
           f"mount --bind {old}/$f /dev/$f; done && "
           f"mkdir -p $(dirname /dev/{device}) && touch /dev/{device} && "
           f'exec "$0" -c "$1"')
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, str(site)]), **(extra_env or {}))
  for name in tpu_env.PJRT_VARIABLES + ("TPU_LOAD_LIBRARY",):
    if name not in (extra_env or {}):
      env.pop(name, None)
  proc = subprocess.run(["unshare", "-m", "sh", "-c", shell, sys.executable, script],
                        capture_output=True, text=True, env=env, timeout=60)
  if proc.returncode != 0 and "unshare" in proc.stderr:
    pytest.skip(f"private mount namespaces are not available here: {proc.stderr.strip()}")
  assert proc.returncode == 0, proc.stderr
  return json.loads(proc.stdout.strip().splitlines()[-1]), str(site / "libtpu" / "libtpu.so")


PROBE = ("import json, os, sys, vae_dist; print(json.dumps({'env': {k: os.environ.get(k) "
         "for k in vae_dist.tpu_env.PJRT_VARIABLES}, 'tensorflow': 'tensorflow' in sys.modules}))")


@pytest.mark.parametrize("device", ["accel0", "vfio/0"])
def test_importing_vae_dist_on_a_tpu_vm_sets_pjrt_before_tensorflow(tmp_path, device):
  seen, lib = _in_namespace_with_tpu_device(device, PROBE, tmp_path)
  assert seen["env"] == {"PJRT_DEVICE": "TPU", "NEXT_PLUGGABLE_DEVICE_USE_C_API": "true",
                         "TF_PLUGGABLE_DEVICE_LIBRARY_PATH": lib}
  assert not seen["tensorflow"]


def test_pod_driver_with_tpu_load_library_0_gets_no_pjrt(tmp_path):
  seen, _ = _in_namespace_with_tpu_device("accel0", PROBE, tmp_path, {"TPU_LOAD_LIBRARY": "0"})
  assert seen["env"] == dict.fromkeys(tpu_env.PJRT_VARIABLES)


def test_nothing_is_set_on_this_machine():
  proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                        env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)
  assert proc.returncode == 0, proc.stderr
  seen = json.loads(proc.stdout.strip().splitlines()[-1])
  if tpu_env.tpu_devices():
    pytest.skip("this machine has TPU devices")
  assert seen["env"] == {k: os.environ.get(k) for k in tpu_env.PJRT_VARIABLES}

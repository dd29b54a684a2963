"""The environment TensorFlow needs on a Cloud TPU VM, set before TensorFlow is imported.

A pip-installed `tensorflow-tpu` reaches the chips through PJRT as a pluggable device, and it
reads three variables once, while `import tensorflow` runs (TF 2.21's __init__ loads
TF_PLUGGABLE_DEVICE_LIBRARY_PATH then; setting them later does nothing):

  PJRT_DEVICE=TPU, NEXT_PLUGGABLE_DEVICE_USE_C_API=true,
  TF_PLUGGABLE_DEVICE_LIBRARY_PATH=<libtpu.so of the `libtpu` package, or /lib/libtpu.so>

`vae_dist/__init__.py` calls configure(), so every entry point (main, generate, evaluate,
export, the launchers' remote commands) gets them on a TPU VM, whoever started it. Values
already in the environment win. Nothing is set where no TPU device or no libtpu exists, or
where TPU_LOAD_LIBRARY=0 says this process must leave the chips alone (the single-client driver
on worker 0 of a pod slice, whose chips belong to the TPU runtime on each host; Google's own
TF-on-TPU CI sets exactly that). This module must not import TensorFlow.
"""
import glob
import importlib.util
import os
import sys

PJRT_VARIABLES = ("PJRT_DEVICE", "NEXT_PLUGGABLE_DEVICE_USE_C_API",
                  "TF_PLUGGABLE_DEVICE_LIBRARY_PATH")


def tpu_devices(dev: str = "/dev") -> list:
  """The TPU chips' device files: /dev/accel* (v4 and earlier), /dev/vfio/<n> (v5e, v5p, v6e)."""
  return sorted(glob.glob(os.path.join(dev, "accel*")) +
                glob.glob(os.path.join(dev, "vfio", "[0-9]*")))


def libtpu_path():
  """libtpu.so from the `libtpu` pip package (what tensorflow-tpu depends on), else the image's."""
  try:
    spec = importlib.util.find_spec("libtpu")
  except (ImportError, ValueError):
    spec = None
  if spec is not None and spec.submodule_search_locations:
    for folder in spec.submodule_search_locations:
      path = os.path.join(folder, "libtpu.so")
      if os.path.isfile(path):
        return path
  return "/lib/libtpu.so" if os.path.isfile("/lib/libtpu.so") else None


def pjrt_environment(environ, devices, library) -> dict:
  """The variables to add to `environ` (those it lacks), given this host's devices and library."""
  if not devices or not library or environ.get("TPU_LOAD_LIBRARY") == "0":
    return {}
  wanted = {"PJRT_DEVICE": "TPU", "NEXT_PLUGGABLE_DEVICE_USE_C_API": "true",
            "TF_PLUGGABLE_DEVICE_LIBRARY_PATH": library}
  return {k: v for k, v in wanted.items() if k not in environ}


def configure(environ=None) -> dict:
  """Adds the PJRT variables on a TPU VM; returns what it added."""
  environ = os.environ if environ is None else environ
  devices = tpu_devices()
  added = pjrt_environment(environ, devices, libtpu_path() if devices else None)
  if added and "tensorflow" in sys.modules:
    print("warning: TensorFlow was imported before vae_dist on this TPU VM, so it did not see "
          f"{', '.join(sorted(added))}; import vae_dist first or set them yourself.",
          file=sys.stderr)
  environ.update(added)
  return added

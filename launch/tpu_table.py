"""Cloud TPU generations: what a --accelerator_type means, and the images each one runs.

The table and its sources are in BUILD_NOTES.md, "TPU VMs: the table".
"""
import dataclasses
import re
import shlex


class LaunchError(Exception):
  """A problem with the launcher's arguments or the TPU; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Accelerator:
  generation: str  # v2, v3, v4, v5p, v5litepod, v6e
  size: int  # The number after the dash (TensorCores or chips depending on the generation).
  num_hosts: int

  @property
  def multi_host(self) -> bool:
    return self.num_hosts > 1


# Generations whose type counts TensorCores, with 8 per host (4 chips x 2 cores, or 4 x 2 on v2/v3).
_CORES_PER_HOST = {"v2": 8, "v3": 8, "v4": 8, "v5p": 8}
# Generations whose type counts chips: up to 8 chips fit one host, larger slices have 4 per host.
_CHIPS_SINGLE_HOST_MAX = {"v5litepod": 8, "v6e": 8}
_CHIPS_PER_HOST_IN_POD = 4

# Which software each kind of slice runs: BUILD_NOTES.md "TPU VMs: the table" is this table in
# prose, with its sources. One host: the generation's base image (no TensorFlow of its own) and
# tensorflow-tpu + libtpu from the `tpu` extra; the program runs there with --tpu=local and sets
# the PJRT variables itself (vae_dist/tpu_env.py). A pod slice: TensorFlow's single-client model,
# a TensorFlow pod image whose TPU runtime (a gRPC worker container on every host) is switched to
# --tpu_runtime_image, the worker build of the client's TensorFlow, as Google's TF-on-TPU CI does;
# the client runs on worker 0 with TPU_NAME=<name> and TPU_LOAD_LIBRARY=0 and no PJRT variables.
_BASE_IMAGE = {
    "v2": "tpu-ubuntu2204-base",
    "v3": "tpu-ubuntu2204-base",
    "v4": "tpu-ubuntu2204-base",
    "v5p": "v2-alpha-tpuv5",
    "v5litepod": "v2-alpha-tpuv5-lite",
    "v6e": "v2-alpha-tpuv6e",
}
# The newest TensorFlow pod images found in Google's docs and issues (2.18.0), split by family.
_POD_IMAGE = {
    "v2": "tpu-vm-tf-2.18.0-pod-pjrt-v5p-and-below",
    "v3": "tpu-vm-tf-2.18.0-pod-pjrt-v5p-and-below",
    "v4": "tpu-vm-tf-2.18.0-pod-pjrt-v5p-and-below",
    "v5p": "tpu-vm-tf-2.18.0-pod-pjrt-v5p-and-below",
    "v5litepod": "tpu-vm-tf-2.18.0-pod-pjrt-v5e-and-v6",
    "v6e": "tpu-vm-tf-2.18.0-pod-pjrt-v5e-and-v6",
}
# The systemd unit of the TPU runtime on TensorFlow pod images, and its image line.
TPU_RUNTIME_UNIT = "/etc/systemd/system/tpu-runtime.service"


def default_runtime_version(accelerator: "Accelerator", single_client_pod: bool) -> str:
  table = _POD_IMAGE if single_client_pod else _BASE_IMAGE
  return table.get(accelerator.generation, "")


def runtime_switch_command(image: str) -> str:
  """Shell command pointing a host's TPU runtime at `image` and restarting it."""
  sed = f"s|TF_DOCKER_URL=.*|TF_DOCKER_URL={image}\"|"
  steps = [["sudo", "sed", "-i", sed, TPU_RUNTIME_UNIT], ["sudo", "systemctl", "daemon-reload"],
           ["sudo", "systemctl", "restart", "tpu-runtime"]]
  return " && ".join(shlex.join(step) for step in steps)


def parse_accelerator(accelerator_type: str, num_hosts: int = 0) -> Accelerator:
  """Host count of a TPU type such as v4-8 (1 host), v4-32 (4) or v5litepod-16 (4).

  Args:
    accelerator_type: the gcloud --accelerator-type value.
    num_hosts: > 0 overrides the derived count (for types this table does not know).

  Raises:
    LaunchError: the type is malformed, or unknown and num_hosts is not given.
  """
  m = re.fullmatch(r"([a-z0-9]+?)-(\d+)", accelerator_type or "")
  if not m:
    raise LaunchError(f"--accelerator_type={accelerator_type!r} is not of the form "
                      "<generation>-<size>, e.g. v4-8 or v5litepod-16.")
  generation, size = m.group(1), int(m.group(2))
  if num_hosts > 0:
    return Accelerator(generation, size, num_hosts)
  if generation in _CORES_PER_HOST:
    hosts = max(1, size // _CORES_PER_HOST[generation])
  elif generation in _CHIPS_SINGLE_HOST_MAX:
    hosts = 1 if size <= _CHIPS_SINGLE_HOST_MAX[generation] else size // _CHIPS_PER_HOST_IN_POD
  else:
    raise LaunchError(f"Unknown TPU generation in --accelerator_type={accelerator_type}; pass "
                      "--num_hosts (and --runtime_version) explicitly.")
  return Accelerator(generation, size, hosts)

"""Packaging entry point; the metadata lives in setup.cfg.

TensorFlow is the one requirement chosen here rather than in setup.cfg: the CPU and GPU builds are
the distribution `tensorflow`, but Cloud TPU VMs need `tensorflow-tpu`, which installs into the
same import path. Installing both breaks the TPU build, so the TPU recipe sets
VAE_DIST_TF_PROVIDED=1 and takes TensorFlow from the `tpu` extra instead (see BUILD_NOTES.md).
"""
import os

import setuptools

TENSORFLOW = "tensorflow>=2.20,<2.22"

install_requires = []
if os.environ.get("VAE_DIST_TF_PROVIDED", "") not in ("1", "true", "yes"):
  install_requires.append(TENSORFLOW)

setuptools.setup(install_requires=install_requires)

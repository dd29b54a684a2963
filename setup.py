"""Packaging entry point: metadata and extras live in setup.cfg, the requirements here.

TensorFlow is the one requirement that depends on the machine: the CPU and GPU builds are
the distribution `tensorflow`, but Cloud TPU VMs need `tensorflow-tpu`, which installs into the
same import path. Installing both breaks the TPU build, so the TPU recipe sets
VAE_DIST_TF_PROVIDED=1 and takes TensorFlow from the `tpu` extra instead (see BUILD_NOTES.md).
"""
import os

import setuptools

TENSORFLOW = "tensorflow>=2.20,<2.22"

install_requires = [
    "tensorflow-datasets>=4.9.9,<5",
    # TFDS 4.9.10 imports it on every Python but declares it only below 3.9
    # (tensorflow/datasets#11212).
    "importlib_resources>=6",
    "tensorboard>=2.20,<2.22",
    "absl-py>=2.1",
    "ml-collections>=1.0,<2",
    "numpy>=1.26,<3",
    "pillow>=10",
    "matplotlib>=3.8",
]
if os.environ.get("VAE_DIST_TF_PROVIDED", "") not in ("1", "true", "yes"):
  install_requires.append(TENSORFLOW)

# The configs live at the repository's root (configs/, where the documented commands name them)
# and are installed as the package vae_dist.configs, so that a wheel holds them and
# `--config=mnist:smoke` finds them from any directory (vae_dist/cli.py, config_dirs).
# configs/ has no __init__.py (it holds configs only): vae_dist.configs is a namespace package.
packages = setuptools.find_packages(include=["vae_dist", "vae_dist.*"]) + ["vae_dist.configs"]

setuptools.setup(install_requires=install_requires, packages=packages,
                 package_dir={"vae_dist.configs": "configs"})

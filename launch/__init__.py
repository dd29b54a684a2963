"""Launchers for vae_dist: Cloud TPU VMs, several local or remote workers, and Slurm.

Each launcher is a standalone script (`python launch/tpu_vm.py ...`,
`python launch/multiworker.py ...`, `sbatch launch/slurm.sbatch ...`) that needs only the
standard library and absl-py; this package file lets tests import their pure functions.
"""

"""The shipped configs. Installed as the package vae_dist.configs (setup.py maps this folder), so
`--config=mnist:smoke` works from any directory; `--config=configs/mnist.py` works in a checkout."""

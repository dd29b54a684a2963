"""The base config: every field at its default (see vae_dist/config/defaults.py)."""
from vae_dist.config import checks
from vae_dist.config import defaults


def get_config(arg=None):
  checks.check_arg(arg, ('smoke',), __file__)
  config = defaults.base_config()
  config.name = "default"
  if arg == "smoke":
    defaults.smoke(config)
  return config

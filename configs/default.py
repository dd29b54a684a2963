"""The base config: every field at its default (see vae_dist/config_defaults.py)."""
from vae_dist import config_checks
from vae_dist import config_defaults


def get_config(arg=None):
  config_checks.check_arg(arg, ('smoke',), __file__)
  config = config_defaults.base_config()
  config.name = "default"
  if arg == "smoke":
    config_defaults.smoke(config)
  return config

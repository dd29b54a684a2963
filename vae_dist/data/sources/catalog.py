"""Catalog data sets: builders from the TFDS registry, and their download with clear failures."""
import difflib
import os
import socket
import urllib.parse
from typing import Iterable, Sequence

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from vae_dist import errors
from vae_dist.data.sources import common

CATALOG_URL = "https://www.tensorflow.org/datasets/catalog/overview"

# With any of these set, connections go through a proxy and a direct probe proves nothing.
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                    "all_proxy")
_PROBE_TIMEOUT_SECONDS = 5.0
_MAX_PROBED_HOSTS = 3


def make_builder(name: str, config_name: str, data_dir: str) -> tfds.core.DatasetBuilder:
  """Returns the TFDS builder of a catalog data set (prepared or not).

  Args:
    name: a TFDS catalog name, optionally with ':version'.
    config_name: the builder config ('' for the default).
    data_dir: the TFDS data dir; '' for TFDS' default.

  Raises:
    DataError: unknown name or config.
  """
  try:
    return tfds.builder(name, config=config_name or None, data_dir=data_dir or None)
  except tfds.core.registered.DatasetNotFoundError:
    close = difflib.get_close_matches(name, tfds.list_builders(), n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise errors.DataError(
        f"config.dataset='{name}' is not a TFDS catalog data set, 'cartoon_set' or "
        f"'image_folder'.{hint} The catalog: {CATALOG_URL}") from None
  except (ValueError, AssertionError) as e:
    raise errors.DataError(
        f"Cannot open TFDS data set '{name}' with config.dataset_config='{config_name}': "
        f"{common.first_line(e)}{_config_hint(name)}") from None


def _config_hint(name: str) -> str:
  """' Its configs: a, b.' for a builder with configs, else ''."""
  try:
    configs = tfds.builder_cls(name.split(":")[0]).builder_configs
  except Exception:  # pylint: disable=broad-except  # Only a hint: never hide the real error.
    return ""
  return f" Its configs: {', '.join(sorted(configs))}." if configs else ""


def check_image_feature(builder: tfds.core.DatasetBuilder) -> None:
  """Checks that the data set has the 'image' feature the input pipeline reads.

  Raises:
    DataError: no 'image' feature, or not uint8 with 1 or 3 channels.
  """
  features = builder.info.features
  image = features["image"] if "image" in features else None
  if not isinstance(image, tfds.features.Image):
    raise errors.DataError(
        f"Data set '{builder.name}' has no 'image' feature (tfds.features.Image); its features "
        f"are {', '.join(features.keys())}. vae_dist trains on image data sets.")
  channels = image.shape[-1] if image.shape else None
  dtype = np.dtype(image.np_dtype).name
  if dtype != "uint8" or channels not in (1, 3):
    raise errors.DataError(
        f"Data set '{builder.name}': its 'image' feature is {dtype} with shape "
        f"{image.shape}; vae_dist reads uint8 images with 1 or 3 channels.")


def load(name: str, config_name: str, data_dir: str, manual_dir: str) -> tfds.core.DatasetBuilder:
  """Returns the prepared builder of a catalog data set, downloading it if needed.

  Raises:
    DataError: unknown data set, not an image data set, or not prepared and not downloadable.
  """
  builder = make_builder(name, config_name, data_dir)
  check_image_feature(builder)
  if not builder.is_prepared():
    download_and_prepare(builder, manual_dir)
  return builder


def download_and_prepare(builder: tfds.core.DatasetBuilder, manual_dir: str,
                         looked: Sequence[str] = (), how: Sequence[str] = ()) -> None:
  """Runs TFDS' own download and preparation, turning every failure into one DataError.

  Args:
    builder: a catalog builder that is not prepared yet.
    manual_dir: config.manual_dir ('' for TFDS' default).
    looked: places already searched by the caller (for example for local files).
    how: ways to get the data known to the caller, put before the generic ones.

  Raises:
    DataError: the hosts are unreachable or the download or preparation failed.
  """
  looked = [f"TFDS data dir: {builder.data_path} (not prepared)", *looked]
  how = [*how, *_generic_ways(builder, manual_dir)]
  hosts = unreachable_hosts(_download_urls(builder))
  if hosts:
    # TFDS retries a failed connection ten times with back-off: minutes of waiting offline.
    looked.append(f"download: cannot connect to {', '.join(hosts)} (no network?)")
    raise common.missing_data_error(builder.name, looked, how, "is not prepared and cannot "
                                    "be downloaded")
  download_config = tfds.download.DownloadConfig(manual_dir=manual_dir or None)
  logging.info("Downloading and preparing %s into %s.", builder.name, builder.data_path)
  try:
    builder.download_and_prepare(download_config=download_config)
  except errors.DataError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # TFDS and requests raise many types.
    looked.append(f"download and preparation failed: {common.first_line(e)}")
    raise common.missing_data_error(builder.name, looked, how, "is not prepared and cannot "
                                    "be downloaded") from None


def _generic_ways(builder: tfds.core.DatasetBuilder, manual_dir: str) -> list[str]:
  """The ways to get any catalog data set, for the error message."""
  ways = []
  instructions = getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
  if instructions:
    text = " ".join(instructions.split())
    where = manual_dir or common.default_manual_dir(builder.data_dir_root)
    ways.append(f"this data set needs files downloaded by hand into config.manual_dir (now "
                f"{where}): {text}")
  ways.append(
      f"on a machine with internet access run `tfds build {builder.info.full_name.split('/')[0]}"
      f"{_config_flag(builder)} --data_dir=DIR`, then copy DIR/{builder.name} into "
      f"{builder.data_dir_root} here, or set config.data_dir to a shared directory (local or "
      f"gs://) that holds it")
  if builder.info.homepage:
    ways.append(f"about the data: {builder.info.homepage}")
  return ways


def _config_flag(builder: tfds.core.DatasetBuilder) -> str:
  return f" --config={builder.builder_config.name}" if builder.builder_config else ""


def _download_urls(builder: tfds.core.DatasetBuilder) -> list[str]:
  """The URLs TFDS will download, from the builder's checksums file ([] when unknown)."""
  try:
    return list(builder.url_infos or {})
  except Exception:  # pylint: disable=broad-except  # Unknown: let TFDS try.
    return []


def unreachable_hosts(urls: Iterable[str], timeout: float = _PROBE_TIMEOUT_SECONDS) -> list[str]:
  """Returns the URLs' hosts when none accepts a TCP connection; [] otherwise.

  [] also when there is nothing to probe or a proxy is configured (the probe cannot tell).

  Args:
    urls: download URLs.
    timeout: seconds to wait for each connection.
  """
  if any(os.environ.get(v) for v in _PROXY_VARIABLES):
    return []
  hosts = []
  for url in urls:
    parsed = urllib.parse.urlparse(url)
    if parsed.hostname and parsed.scheme in ("http", "https", "ftp"):
      port = parsed.port or {"http": 80, "https": 443, "ftp": 21}[parsed.scheme]
      if (parsed.hostname, port) not in hosts:
        hosts.append((parsed.hostname, port))
  hosts = hosts[:_MAX_PROBED_HOSTS]
  for host, port in hosts:
    try:
      with socket.create_connection((host, port), timeout=timeout):
        return []
    except OSError:
      continue
  return [host for host, _ in hosts]

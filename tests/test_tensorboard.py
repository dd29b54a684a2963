"""Two short runs' logdirs, read back through a real TensorBoard server's HTTP API.

The runs are `a/seed0` and `b/seed0`: the same base name, different learning rates and
strategies, one of them profiled. One server on their parent folder serves every test, as a user
comparing runs would start it.
"""
import gzip
import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

import cli
import datagen
import trained_run_fixture
from vae_dist.model import latent_paths
from vae_dist.viz import pictures

RUN = ["--config.dataset=fashion_mnist", "--config.eval_num_examples=-1",
       "--config.num_train_steps=6", "--config.steps_per_loop=2", "--config.log_every_steps=2",
       "--config.eval_every_steps=6", "--config.checkpoint_every_steps=6",
       "--config.num_image_examples=4", "--config.num_scatter_examples=20"]
# TensorBoard tags: the run (train, eval) is the key's prefix in metrics.jsonl, the tag the rest.
TRAIN_TAGS = {"loss", "recon", "kl", "elbo", "learning_rate", "examples_per_sec",
              "steps_per_sec", "grad_norm", "active_units"}
EVAL_TAGS = {"elbo", "recon", "kl", "bits_per_dim", "active_units"}
SHARED_TAGS = {"elbo", "recon", "kl", "active_units"}  # One chart, two curves: train and eval.
A, B = "a/seed0", "b/seed0"
B_FLAGS = ["--config.strategy=mirrored", "--config.num_cpu_devices=2",
           "--config.learning_rate=0.002"]




class TensorBoard:
  """The real server on a free loopback port, loading the whole logdir before it serves."""

  def __init__(self, logdir):
    self.port = cli.free_ports(1)[0]
    self.proc = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", f"--logdir={logdir}", "--host=127.0.0.1",
         f"--port={self.port}", "--load_fast=false", "--reload_task=blocking",
         "--reload_interval=0"],
        env=cli.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while True:
      try:
        self.get("/data/runs")
        return
      except (urllib.error.URLError, ConnectionError):
        assert self.proc.poll() is None, self.proc.stderr.read()
        assert time.time() < deadline, "TensorBoard did not start"
        time.sleep(0.5)

  def get(self, path, body=None, raw=False):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
      content = r.read()
      if r.headers.get("Content-Encoding") == "gzip":  # The profile plugin always compresses.
        content = gzip.decompress(content)
    return content if raw else json.loads(content)

  def close(self):
    self.proc.terminate()
    self.proc.wait(timeout=30)


def _train(workdir, data, *extra):
  proc = cli.run_main("configs/mnist.py:smoke", str(workdir), *RUN, *data, *extra)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """{name: (workdir, its stderr)} of the two runs under one parent folder (the logdir),
  trained once per session even when xdist spreads this module over several workers."""
  # pylint: disable=protected-access
  base = trained_run_fixture._session_root(tmp_path_factory) / "tb_test_runs"
  root = base / "runs"
  with trained_run_fixture._locked(str(base) + ".lock"):
    if not (base / "DONE").exists():
      base.mkdir(exist_ok=True)
      datagen.write_idx_dataset(base / "idx", num_train=64, num_test=20, seed=8)
      data = cli.data_flags(str(base / "idx"), str(base / "tfds"))
      for name, extra in ((A, ["--config.profile_steps=(2, 4)"]), (B, B_FLAGS)):
        (base / f"{name.replace('/', '_')}.stderr").write_text(_train(root / name, data, *extra))
      (base / "DONE").write_text("trained\n")
  out = {name: (str(root / name), (base / f"{name.replace('/', '_')}.stderr").read_text())
         for name in (A, B)}
  out["root"] = str(root)
  return out


@pytest.fixture(scope="module")
def tb(runs):
  server = TensorBoard(runs["root"])
  yield server
  server.close()


def _run(name, run):
  return f"{name}/tensorboard/{run}"


def _size(n, cols, *, pad=2, row_labels=(), col_labels=()):
  """(height, width) of n 28x28 images enlarged 3 times in `cols` columns, below and right of
  their labels (see viz/pictures.py)."""
  rows = -(-n // cols)
  left = max(pictures.text_size(t)[0] for t in row_labels) + 8 if row_labels else 0
  top = max(pictures.text_size(t)[1] for t in col_labels) + 8 if col_labels else 0
  return top + rows * (84 + pad) - pad, left + cols * (84 + pad) - pad


def test_everything_a_run_writes_is_in_tensorboard(runs, tb):
  assert "Summaries took" in runs[A][1]
  train, evalr = _run(A, "train"), _run(A, "eval")
  assert {train, evalr} <= set(tb.get("/data/runs"))

  scalars = tb.get("/data/plugin/scalars/tags")
  assert TRAIN_TAGS <= set(scalars[train]), scalars[train].keys()
  assert EVAL_TAGS <= set(scalars[evalr]), scalars[evalr].keys()
  for run, tag, steps in ((train, "loss", [2, 4, 6]), (evalr, "elbo", [6]),
                          (train, "grad_norm", [2, 4, 6])):
    points = tb.get(f"/data/plugin/scalars/scalars?run={run}&tag={tag}")
    assert [p[1] for p in points] == steps
    assert all(np.isfinite(p[2]) for p in points)

  histograms = tb.get("/data/plugin/histograms/tags")
  assert "kl_per_latent_dim" in histograms[evalr]
  assert "kl_per_latent_dim" in histograms[train]

  images = tb.get("/data/plugin/images/tags")[evalr]
  # 28x28 images enlarged 3 times, 2 px apart, labelled (test images by their index in the eval
  # split); latent_dim is 2 so the grid and the scatter are there too.
  q = [f"{v:.1f}" for v in latent_paths.normal_quantiles(15)]
  expect = {"reconstructions": _size(8, 4, row_labels=("original", "reconstruction"),
                                     col_labels=[f"#{i}" for i in range(4)]),
            "prior_samples": _size(4, 2),
            "interpolation": _size(12, 12, col_labels=["#0"] + [f"t={t:.2f}" for t in
                                                                 np.linspace(0, 1, 10)] + ["#1"]),
            "latent_grid": _size(225, 15, pad=0, row_labels=[f"z1={v}" for v in q],
                                 col_labels=[f"z0={q[0]}"] + q[1:]),
            "latent_scatter": (400, 400)}
  assert set(expect) <= set(images)
  for tag, (height, width) in expect.items():
    entries = tb.get(f"/data/plugin/images/images?run={evalr}&tag={tag}")
    assert [e["step"] for e in entries] == [6]
    png = tb.get("/data/plugin/images/individualImage?" + entries[0]["query"], raw=True)
    picture = Image.open(io.BytesIO(png))
    assert picture.size == (width, height), tag

  text_tags = tb.get("/data/plugin/text/tags")
  assert "config" in text_tags[train]
  text = tb.get(f"/data/plugin/text/text?run={train}&tag=config")
  assert "latent_dim" in text[0]["text"]
  # What this start ran on: versions, host and parameter count, as in run_info.json.
  assert "run_info" in text_tags[train]
  info = tb.get(f"/data/plugin/text/text?run={train}&tag=run_info")[0]["text"]
  assert "tensorflow_version" in info and "trainable_parameters" in info


def test_train_and_eval_curves_of_a_quantity_share_a_chart(runs, tb):
  """The same tag in runs train and eval: TensorBoard draws them in one chart, as Keras'."""
  scalars = tb.get("/data/plugin/scalars/tags")
  for name in (A, B):
    train, evalr = _run(name, "train"), _run(name, "eval")
    shared = set(scalars[train]) & set(scalars[evalr])
    assert shared == SHARED_TAGS, shared
    for tag in shared:
      for run in (train, evalr):
        points = tb.get(f"/data/plugin/scalars/scalars?run={run}&tag={tag}")
        assert points and all(np.isfinite(p[2]) for p in points), (run, tag)
  # metrics.jsonl keeps its prefixed keys.
  records = cli.read_metrics(runs[A][0])
  assert "train/elbo" in records[0] and any("eval/elbo" in r for r in records)


def test_the_graphs_tab_shows_the_model_and_the_host_loop(runs, tb):
  info = tb.get("/data/plugin/graphs/info")
  train, evalr = _run(A, "train"), _run(A, "eval")
  assert info[train]["run_graph"] and info[evalr]["run_graph"]
  model = tb.get(f"/data/plugin/graphs/graph?run={evalr}", raw=True).decode()
  # The forward pass, layer by layer: the encoder's convolutions, the sampling, the decoder.
  for scope in ("encode/encoder", "conv2d", "sample_z/", "decode/decoder", "conv2d_transpose",
                "likelihood_mean/"):
    assert f'name: "{scope}' in model or f"/{scope}" in model, scope
  assert 'op: "Conv2D"' in model
  loop = tb.get(f"/data/plugin/graphs/graph?run={train}", raw=True).decode()
  assert "node" in loop and "While" in loop  # The host loop's tf.range loop.


def test_two_runs_of_the_same_base_name_are_two_hparams_rows(runs, tb):
  experiment = tb.get("/data/plugin/hparams/experiment", body={"experimentName": ""})
  infos = {h["name"]: h for h in experiment["hparamInfos"]}
  assert {"latent_dim", "batch_size", "learning_rate", "strategy", "num_replicas"} <= set(infos)
  # Typed, with domains, and flagged where the runs differ (the columns the table shows).
  assert infos["learning_rate"]["type"] == "DATA_TYPE_FLOAT64"
  assert infos["learning_rate"]["domainInterval"] == {"minValue": 0.0001, "maxValue": 0.002}
  assert infos["strategy"]["type"] == "DATA_TYPE_STRING"
  assert set(infos["strategy"]["domainDiscrete"]) == {"auto", "mirrored"}
  assert infos["latent_dim"]["type"] == "DATA_TYPE_FLOAT64" and not infos["latent_dim"]["differs"]
  differs = {name for name, h in infos.items() if h.get("differs")}
  assert differs == {"learning_rate", "strategy", "num_replicas"}, differs
  metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
  assert {"elbo", "bits_per_dim"} <= metrics
  groups = tb.get("/data/plugin/hparams/session_groups",
                  body={"experimentName": "", "startIndex": 0, "sliceSize": 10,
                        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS",
                                            "STATUS_FAILURE", "STATUS_RUNNING"],
                        "colParams": []})
  assert groups["totalSize"] == 2
  rows = {g["name"]: g for g in groups["sessionGroups"]}
  for name, rate, replicas in ((A, 0.0001, 1), (B, 0.002, 2)):
    workdir = runs[name][0]
    [trial] = [t for t in rows if t.startswith(f"{name} ({workdir}, ")]
    row = rows[trial]
    assert row["hparams"]["learning_rate"] == rate
    assert row["hparams"]["num_replicas"] == replicas
    values = {m["name"]["tag"]: m["value"] for m in row["metricValues"]}
    assert np.isfinite(values["elbo"])


def test_the_profile_tab_lists_the_profiled_run(runs, tb):
  stderr = runs[A][1]
  assert "Profiling from step 2 to 4" in stderr and "Profile written to" in stderr
  assert "pip install" not in stderr  # The profile plugin is installed (make install).
  assert tb.get("/data/plugins_listing")["profile"]["enabled"]
  profiled = tb.get("/data/plugin/profile/runs")
  assert any(r.startswith(_run(A, "train")) for r in profiled), profiled
  assert not any(r.startswith(B) for r in profiled), profiled


def test_two_replicas_write_each_tag_once(runs, tb):
  train, evalr = _run(B, "train"), _run(B, "eval")
  scalars = tb.get("/data/plugin/scalars/tags")
  assert TRAIN_TAGS <= set(scalars[train]) and EVAL_TAGS <= set(scalars[evalr])
  points = tb.get(f"/data/plugin/scalars/scalars?run={train}&tag=loss")
  assert [p[1] for p in points] == [2, 4, 6]
  entries = tb.get(f"/data/plugin/images/images?run={evalr}&tag=reconstructions")
  assert [e["step"] for e in entries] == [6]
  assert tb.get("/data/plugin/graphs/info")[train]["run_graph"]
  for run in ("train", "eval"):
    files = os.listdir(os.path.join(runs[B][0], "tensorboard", run))
    assert len([f for f in files if f.startswith("events.")]) == 1


def test_without_the_profile_plugin_the_profiling_lines_say_what_to_install(monkeypatch):
  import importlib.util  # pylint: disable=g-import-not-at-top
  from vae_dist.report import run_summaries  # pylint: disable=g-import-not-at-top
  assert run_summaries.profile_plugin_note() == ""  # Installed here (make install).
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in (
      "xprof", "tensorboard_plugin_profile") else real(name, *a))
  note = run_summaries.profile_plugin_note()
  assert "pip install 'tensorboard-plugin-profile>=2.20'" in note and "vae_dist[profile]" in note

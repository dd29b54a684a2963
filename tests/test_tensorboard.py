"""A short run's logdir, read back through a real TensorBoard server's HTTP API."""
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

RUN = ["--config.dataset=fashion_mnist", "--config.eval_num_examples=-1",
       "--config.num_train_steps=6", "--config.steps_per_loop=2", "--config.log_every_steps=2",
       "--config.eval_every_steps=6", "--config.checkpoint_every_steps=6",
       "--config.num_image_examples=4", "--config.num_scatter_examples=20"]
TRAIN_TAGS = {"train/loss", "train/recon", "train/kl", "train/elbo", "train/learning_rate",
              "train/examples_per_sec", "train/steps_per_sec", "train/grad_norm",
              "train/active_units"}
EVAL_TAGS = {"eval/elbo", "eval/recon", "eval/kl", "eval/bits_per_dim", "eval/active_units"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp("data")
  datagen.write_idx_dataset(root / "idx", num_train=64, num_test=20, seed=8)
  return cli.data_flags(str(root / "idx"), str(root / "tfds"))


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
    return content if raw else json.loads(content)

  def close(self):
    self.proc.terminate()
    self.proc.wait(timeout=30)


def _train(tmp_path, data, *extra):
  workdir = str(tmp_path / "run")
  proc = cli.run_main("configs/mnist.py:smoke", workdir, *RUN, *data, *extra)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir, proc


def test_everything_a_run_writes_is_in_tensorboard(tmp_path, data):
  workdir, proc = _train(tmp_path, data)
  assert "Summaries took" in proc.stderr
  tb = TensorBoard(os.path.join(workdir, "tensorboard"))
  try:
    runs = tb.get("/data/runs")
    assert {"train", "eval"} <= set(runs)

    scalars = tb.get("/data/plugin/scalars/tags")
    assert TRAIN_TAGS <= set(scalars["train"]), scalars["train"].keys()
    assert EVAL_TAGS <= set(scalars["eval"]), scalars["eval"].keys()
    for run, tag, steps in (("train", "train/loss", [2, 4, 6]), ("eval", "eval/elbo", [6]),
                            ("train", "train/grad_norm", [2, 4, 6])):
      points = tb.get(f"/data/plugin/scalars/scalars?run={run}&tag={tag}")
      assert [p[1] for p in points] == steps
      assert all(np.isfinite(p[2]) for p in points)

    histograms = tb.get("/data/plugin/histograms/tags")
    assert "eval/kl_per_latent_dim" in histograms["eval"]
    assert "train/kl_per_latent_dim" in histograms["train"]

    images = tb.get("/data/plugin/images/tags")["eval"]
    # 28x28 images, 1 px padding; latent_dim is 2 so the grid and the scatter are there too.
    expect = {"eval/reconstructions": (2 * 29 - 1, 4 * 29 - 1),
              "eval/prior_samples": (2 * 29 - 1, 2 * 29 - 1),
              "eval/interpolation": (28, 12 * 29 - 1),
              "eval/latent_grid": (15 * 29 - 1, 15 * 29 - 1),
              "eval/latent_scatter": (400, 400)}
    assert set(expect) <= set(images)
    for tag, (height, width) in expect.items():
      entries = tb.get(f"/data/plugin/images/images?run=eval&tag={tag}")
      assert [e["step"] for e in entries] == [6]
      png = tb.get("/data/plugin/images/individualImage?" + entries[0]["query"], raw=True)
      picture = Image.open(io.BytesIO(png))
      assert picture.size == (width, height), tag

    graphs = tb.get("/data/plugin/graphs/info")
    assert graphs["train"]["run_graph"]
    graph = tb.get("/data/plugin/graphs/graph?run=train", raw=True).decode()
    assert "node" in graph and "While" in graph  # The host loop's tf.range loop.

    experiment = tb.get("/data/plugin/hparams/experiment", body={"experimentName": ""})
    names = {h["name"] for h in experiment["hparamInfos"]}
    assert {"latent_dim", "batch_size", "learning_rate", "strategy", "num_replicas"} <= names
    metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
    assert {"eval/elbo", "eval/bits_per_dim"} <= metrics
    groups = tb.get("/data/plugin/hparams/session_groups",
                    body={"experimentName": "", "startIndex": 0, "sliceSize": 10,
                          "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS",
                                              "STATUS_FAILURE", "STATUS_RUNNING"],
                          "colParams": []})
    assert groups["totalSize"] == 1
    session = groups["sessionGroups"][0]
    assert session["hparams"]["latent_dim"] == 2
    values = {m["name"]["tag"]: m["value"] for m in session["metricValues"]}
    assert np.isfinite(values["eval/elbo"])

    text_tags = tb.get("/data/plugin/text/tags")
    assert "config" in text_tags["train"]
    text = tb.get("/data/plugin/text/text?run=train&tag=config")
    assert "latent_dim" in text[0]["text"]
  finally:
    tb.close()


def test_two_replicas_write_each_tag_once(tmp_path, data):
  workdir, _ = _train(tmp_path, data, "--config.strategy=mirrored",
                      "--config.num_cpu_devices=2")
  tb = TensorBoard(os.path.join(workdir, "tensorboard"))
  try:
    scalars = tb.get("/data/plugin/scalars/tags")
    assert TRAIN_TAGS <= set(scalars["train"]) and EVAL_TAGS <= set(scalars["eval"])
    points = tb.get("/data/plugin/scalars/scalars?run=train&tag=train/loss")
    assert [p[1] for p in points] == [2, 4, 6]
    entries = tb.get("/data/plugin/images/images?run=eval&tag=eval/reconstructions")
    assert [e["step"] for e in entries] == [6]
    assert tb.get("/data/plugin/graphs/info")["train"]["run_graph"]
  finally:
    tb.close()
  for run in ("train", "eval"):
    files = os.listdir(os.path.join(workdir, "tensorboard", run))
    assert len([f for f in files if f.startswith("events.")]) == 1

"""The speed benchmark in its short mode: every field, for every kind of variant, on tiny data.

It runs the real command line (one worker process per replica count), so it checks what a user
gets; the figures themselves are not asserted, only that they are there and make sense.
"""
import json
import math
import subprocess
import sys

import pytest

import cli
import datagen

TOP_FIELDS = ("benchmark", "vae_dist_version", "tensorflow_version", "config", "dataset", "short",
              "command", "host", "matmul", "flops", "input_pipeline", "variants", "summary")
MATMUL_FIELDS = ("size", "gflops_per_sec", "gflops_per_sec_min", "gflops_per_sec_max", "device")
FLOPS_FIELDS = ("method", "per_image_forward", "per_image_train", "per_layer_forward",
                "graph_conv_matmul_per_image", "analytic_matches_graph",
                "graph_uncounted_call_ops", "profiler_per_image", "profiler_by_op_type",
                "xla_conv_dot_per_image")
PIPELINE_FIELDS = ("train_examples", "cache_warmed", "first_pass_images_per_sec",
                   "images_per_sec", "batches_timed")
VARIANT_FIELDS = ("batch_size", "jit_compile", "steps_per_loop", "replicas", "mixed_precision",
                  "strategy", "xla", "steps_per_round", "compile_seconds", "train", "plain",
                  "speedup_vs_plain", "speedup_vs_plain_min", "speedup_vs_plain_max",
                  "flops_per_image", "train_gflops_per_sec", "plain_gflops_per_sec",
                  "fraction_of_matmul_peak")
TIMING_FIELDS = ("images_per_sec", "step_time_ms", "images_per_sec_min", "images_per_sec_max",
                 "rounds_images_per_sec")
SUMMARY_FIELDS = ("train_images_per_sec", "plain_images_per_sec", "speedup_vs_plain",
                  "speedup_vs_plain_min", "speedup_vs_plain_max", "fraction_of_matmul_peak")

# configs/mnist.py, the tutorial model, counted by hand from its layer shapes: forward
# 2 x MACs of conv 28->13x13x32, conv ->6x6x64, dense 2304->4, dense 2->1568,
# transposed convs 7x7x32->14x14x64, ->28x28x32, ->28x28x1; training is 3 x forward minus the
# first conv's input gradient.
TUTORIAL_FORWARD_FLOPS = 10_932_416
TUTORIAL_TRAIN_FLOPS = 32_699_904


def _positive(x):
  return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def short_result(tmp_path_factory):
  root = tmp_path_factory.mktemp("bench")
  datagen.write_idx_dataset(root / "idx", num_train=64, num_test=16, seed=5)
  output = root / "out" / "bench.json"
  args = [sys.executable, "benchmarks/speed.py", "--config=configs/mnist.py", "--short",
          "--config.dataset=fashion_mnist", *cli.data_flags(root / "idx", root / "tfds"),
          f"--output={output}", "--input_sizes=28", "--input_cores=1", "--input_step_batch=8"]
  proc = subprocess.run(args, cwd=cli.ROOT, env=cli.env(), capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-4000:]
  result = json.loads(proc.stdout)
  with open(output) as f:
    assert json.load(f) == result
  return result


def test_short_run_has_every_field(short_result):
  r = short_result
  for key in TOP_FIELDS:
    assert key in r, key
  assert r["short"] is True and r["config"] == "mnist"
  for key in MATMUL_FIELDS:
    assert key in r["matmul"], key
  assert _positive(r["matmul"]["gflops_per_sec"])
  assert set(r["host"]["devices"]) == {"1", "2"}
  for batch in ("8",):
    for key in FLOPS_FIELDS:
      assert key in r["flops"][batch], key
    for key in PIPELINE_FIELDS:
      assert key in r["input_pipeline"][batch], key
    assert _positive(r["input_pipeline"][batch]["images_per_sec"])
  for v in r["variants"]:
    for key in VARIANT_FIELDS:
      assert key in v, (key, v)
    for side in ("train", "plain"):
      for key in TIMING_FIELDS:
        assert key in v[side], (side, key)
      assert _positive(v[side]["images_per_sec"]) and _positive(v[side]["step_time_ms"])
    assert _positive(v["speedup_vs_plain"]) and _positive(v["fraction_of_matmul_peak"])
    assert _positive(v["train_gflops_per_sec"])
  assert set(r["summary"]) == {"8"}
  for key in SUMMARY_FIELDS:
    assert key in r["summary"]["8"], key


def test_short_run_covers_every_kind_of_variant(short_result):
  seen = {(v["jit_compile"], v["steps_per_loop"], v["replicas"], v["mixed_precision"])
          for v in short_result["variants"]}
  # jit on/off x steps_per_loop 1/2 at the base; bfloat16 and two replicas with jit on and off.
  assert {(j, s, 1, "none") for j in (True, False) for s in (1, 2)} <= seen
  assert {(j, 2, 1, "bfloat16") for j in (True, False)} <= seen
  assert {(j, 2, 2, "none") for j in (True, False)} <= seen
  two = [v for v in short_result["variants"] if v["replicas"] == 2]
  assert all(v["strategy"] == "MirroredStrategy" for v in two)
  # With several replicas XLA compiles the loss and gradients only (see steps.Trainer).
  assert {v["xla"] for v in two if v["jit_compile"]} == {"loss and gradients"}


def test_flops_are_counted_and_agree(short_result):
  f = short_result["flops"]["8"]
  assert f["per_image_forward"] == TUTORIAL_FORWARD_FLOPS
  assert f["per_image_train"] == TUTORIAL_TRAIN_FLOPS
  assert f["analytic_matches_graph"] and f["graph_uncounted_call_ops"] == []
  assert f["graph_conv_matmul_per_image"] == TUTORIAL_TRAIN_FLOPS
  # The profiler's registered formulas approximate conv gradients; within a few percent.
  assert abs(f["profiler_per_image"] / TUTORIAL_TRAIN_FLOPS - 1) < 0.05
  # XLA runs the transposed convolutions input-dilated: more FLOPs than the model needs.
  assert f["xla_conv_dot_per_image"] >= TUTORIAL_TRAIN_FLOPS


def test_fast_config_is_the_tutorial_model_trained_differently():
  """configs/fashion_mnist_fast.py: same model family and objective, its own training recipe."""
  from conftest import load_config  # pylint: disable=g-import-not-at-top
  from vae_dist.config import checks  # pylint: disable=g-import-not-at-top
  fast = load_config("fashion_mnist_fast")
  for arg in (None, "smoke"):
    checks.validate(load_config("fashion_mnist_fast", arg))
  assert fast.dataset == "fashion_mnist"
  assert (fast.latent_dim, fast.binarize, fast.likelihood) == (2, "static", "bernoulli")
  assert fast.image_size == 28 and fast.channels == 1



def test_input_rates_per_core_for_each_size_and_cache(short_result):
  """--input_sizes: images/s per core from raw data, the disk cache and memory; the train step."""
  entry = short_result["input_per_core"]["sizes"]["28"]
  one = entry["pipeline"]["1"]
  assert one["cores"] == 1 and one["train_examples"] == 64  # Pinned to one core.
  assert set(one["images_per_sec_per_core"]) == {"raw", "build", "disk", "memory", "memory_full"}
  assert all(_positive(v) for v in one["images_per_sec_per_core"].values())
  assert all(_positive(v) for v in one["images_per_sec"].values())
  step = entry["train_step"]
  assert step["batch_size"] == 8 and _positive(step["images_per_sec"])
  assert step["train_flops_per_image"] == TUTORIAL_TRAIN_FLOPS

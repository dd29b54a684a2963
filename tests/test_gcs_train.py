"""Training on gs:// through TensorFlow's GCS client: data, checkpoints, lease, metrics, kill/resume.

Everything runs through the real command line inside the namespace of gcs_harness, the workdir
and the TFDS data_dir in the emulator's bucket. What is checked is read back from the store.
"""
import json
import signal
import sys
import time

import pytest

import cli
from gcs_harness import gcs, gcs_namespace  # noqa: F401  # pylint: disable=unused-import

BUCKET = "vae-test"
SMOKE = "configs/mnist.py:smoke"
# 12 steps, a checkpoint every 4, a log line every 2, the two latest steps kept, one eval at the
# end.
RUN = ["--config.dataset=fashion_mnist", "--config.eval_num_examples=-1",
       "--config.deterministic=true", "--config.num_train_steps=12", "--config.max_to_keep=2",
       "--config.eval_every_steps=12"]
# TensorFlow's GCS client retries up to 10 times from a 1 s delay, doubling; shorter here so that
# a fault test takes seconds (the same retry code runs).
QUICK_RETRIES = {"GCS_RETRY_CONFIG_INIT_DELAY_TIME_US": "50000",
                 "GCS_RETRY_CONFIG_MAX_DELAY_TIME_US": "400000"}


@pytest.fixture(scope="module")
def data(gcs_namespace, tmp_path_factory):  # pylint: disable=redefined-outer-name
  """IDX files on local disk; TFDS prepares them into gs://vae-test/tfds at the first run."""
  import datagen  # pylint: disable=g-import-not-at-top
  idx = str(tmp_path_factory.mktemp("idx"))
  datagen.write_idx_dataset(idx, num_train=96, num_test=20, seed=14)
  return [f"--config.manual_dir={idx}", f"--config.data_dir=gs://{BUCKET}/tfds"]


@pytest.fixture(scope="module")
def reference(gcs_namespace, data):  # pylint: disable=redefined-outer-name
  """An uninterrupted 12-step run on gs://: its workdir name and the emulator's counters."""
  gcs_namespace.reset_stats()
  proc = gcs_namespace.run(cli.main_args(SMOKE, f"gs://{BUCKET}/ref", *RUN, *data))
  assert proc.returncode == 0, proc.stderr[-3000:]
  return {"run": "ref", "stats": gcs_namespace.stats(), "proc": proc}


def committed_steps(ns, run):
  names = ns.list(BUCKET, f"{run}/checkpoints/")
  steps = {n.split("/")[2] for n in names}
  return sorted(int(s) for s in steps
                if s.isdigit() and f"{run}/checkpoints/{s}/commit_success.txt" in names)


def metrics_lines(ns, run):
  """metrics.jsonl, which a finished run leaves with no part files beside it."""
  assert not ns.list(BUCKET, f"{run}/metrics.jsonl.parts/")
  return [json.loads(line) for line in ns.read(BUCKET, f"{run}/metrics.jsonl").splitlines()]


def metrics_parts(ns, run):
  """The lines of the part files a run on gs:// writes while it trains, in order."""
  names = sorted(ns.list(BUCKET, f"{run}/metrics.jsonl.parts/"))
  return [json.loads(line) for n in names for line in ns.read(BUCKET, n).splitlines()]


def test_data_and_run_on_gs_leave_checkpoints_metrics_config_and_final_metrics(gcs, reference):
  assert "Run finished. Results in gs://vae-test/ref" in reference["proc"].stdout
  assert any(n.endswith("dataset_info.json") for n in gcs.list(BUCKET, "tfds/"))  # Prepared there.
  # Retention: max_to_keep=2 deleted step 4 whole; 8 and 12 are committed.
  assert committed_steps(gcs, "ref") == [8, 12]
  assert not [n for n in gcs.list(BUCKET, "ref/checkpoints/") if n.split("/")[2] == "4"]
  lines = metrics_lines(gcs, "ref")
  assert [m["step"] for m in lines if "train/loss" in m] == [2, 4, 6, 8, 10, 12]
  assert [m["step"] for m in lines if "eval/elbo" in m] == [12]
  final = json.loads(gcs.read(BUCKET, "ref/final_metrics.json"))
  assert final["step"] == 12 and final["eval/elbo"] == lines[-1]["eval/elbo"]
  assert json.loads(gcs.read(BUCKET, "ref/config.json"))["num_train_steps"] == 12
  # The commit marker of each step is the last object of that step to be written.
  order = reference["stats"]["write_order"]
  for step in (4, 8, 12):
    prefix = f"{BUCKET}/ref/checkpoints/{step}/"
    mine = [i for i, name in enumerate(order) if name.startswith(prefix)]
    assert order[max(mine)] == prefix + "commit_success.txt", [order[i] for i in mine]
  # Bytes uploaded, outside checkpoints, at most 3x what the run leaves (every flush of a GCS
  # file uploads all of it again; measure_uploads.py measures long runs).
  uploaded = sum(n for k, n in reference["stats"]["uploaded"].items()
                 if k.startswith(f"{BUCKET}/ref/") and "/checkpoints/" not in k)
  final = sum(n for k, n in gcs.list(BUCKET, "ref/").items() if "/checkpoints/" not in k)
  assert uploaded <= 3 * final, (uploaded, final)
  # An event file is uploaded when opened, at our (timed or final) flushes and at its close: not at
  # every tag (tf.summary's `as_default()` block flushes when it ends).
  writes = reference["stats"]["writes"]
  events = {k: n for k, n in writes.items() if "/tensorboard/" in k and ".tfevents." in k}
  assert events and max(events.values()) <= 5, events
  # The lease went with the run.
  assert "ref/lock" not in gcs.list(BUCKET, "ref/")


def test_kill_during_a_save_refuses_a_second_run_then_resumes_from_the_committed_step(
    gcs, reference, data):
  # Step 8's commit marker hangs: the step is written but not committed when the kill comes.
  gcs.set_faults(delay_match="killed/checkpoints/8/commit_success.txt", delay_seconds=120)
  first = gcs.popen(cli.main_args(SMOKE, f"gs://{BUCKET}/killed", *RUN, *data))
  try:
    deadline = time.time() + 180
    while gcs.stats()["delayed"] == 0:
      assert first.poll() is None, first.communicate()[1][-3000:]
      assert time.time() < deadline, "the save of step 8 never started"
      time.sleep(0.2)
    # The lease: a second run on the same gs:// workdir refuses, naming the first.
    second = gcs.run(cli.main_args(SMOKE, f"gs://{BUCKET}/killed", *RUN, *data))
    assert second.returncode == 1
    errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "in use by another run" in errors[0], second.stderr[-2000:]
    assert f"pid {first.pid}" in errors[0]
  finally:
    first.send_signal(signal.SIGKILL)
    first.communicate()
  gcs.set_faults()
  assert committed_steps(gcs, "killed") == [4]
  names = gcs.list(BUCKET, "killed/checkpoints/8/")
  assert any("/state/ckpt.index" in n for n in names)  # Written, never committed.
  # Lines go up as part files at each checkpoint (and once a minute); the save runs in the
  # background, so training went on and logged past step 4 before the kill.
  assert "killed/metrics.jsonl" not in gcs.list(BUCKET, "killed/")
  steps = [m["step"] for m in metrics_parts(gcs, "killed") if "train/loss" in m]
  assert steps[:2] == [2, 4] and max(steps) > 4, steps

  # The resumed run also rides out a store that answers 5% of its requests with 503 or drops
  # the connection (TensorFlow's client retries).
  gcs.set_faults(rate=0.05, mode="mix", seed=3)
  proc = gcs.run(cli.main_args(SMOKE, f"gs://{BUCKET}/killed", *RUN, *data), **QUICK_RETRIES)
  injected = gcs.stats()["faults_injected"]
  gcs.set_faults()
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert injected > 5, injected
  assert "Taking over the workdir lease of a run that is gone" in proc.stderr
  assert "step directory without commit_success.txt (unfinished save)" in proc.stderr
  assert "Resumed from gs://vae-test/killed/checkpoints/4" in proc.stderr
  assert committed_steps(gcs, "killed") == [8, 12]
  lines = metrics_lines(gcs, "killed")
  assert [m["step"] for m in lines if "train/loss" in m] == [2, 4, 6, 8, 10, 12]
  assert [m["step"] for m in lines if "eval/elbo" in m] == [12]
  # Resumed == uninterrupted, byte for byte: see the test below.


# The reference run prepared the data into gs:// and the killed one found it there; until
# train.py seeded again after the data, that alone gave them different initial weights.
def test_resumed_run_equals_the_uninterrupted_one(gcs, reference):
  resumed = json.loads(gcs.read(BUCKET, "killed/final_metrics.json"))
  expected = json.loads(gcs.read(BUCKET, "ref/final_metrics.json"))
  assert resumed["eval/elbo"] == expected["eval/elbo"]
  for name in gcs.list(BUCKET, "ref/checkpoints/12/state/"):
    assert gcs.read(BUCKET, name) == gcs.read(BUCKET, name.replace("ref/", "killed/", 1)), name


def test_generate_evaluate_export_from_a_gs_workdir_and_load_the_export_back(gcs, reference):
  ref = f"gs://{BUCKET}/ref"
  proc = gcs.run([sys.executable, "-m", "vae_dist.generate", f"--workdir={ref}",
                  "--what=samples", "--num=4"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  pngs = [n for n in gcs.list(BUCKET, "ref/generated/") if n.endswith(".png")]
  assert pngs and gcs.read(BUCKET, pngs[0]).startswith(b"\x89PNG\r\n\x1a\n")
  proc = gcs.run([sys.executable, "-m", "vae_dist.evaluate", f"--workdir={ref}",
                  "--num_samples=4"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  evaluation = json.loads(gcs.read(BUCKET, "ref/evaluations/step_12_k4.json"))
  final = json.loads(gcs.read(BUCKET, "ref/final_metrics.json"))
  assert abs(evaluation["elbo"] - final["eval/elbo"]) < 1e-3 * abs(final["eval/elbo"]), evaluation
  proc = gcs.run([sys.executable, "-m", "vae_dist.export", f"--workdir={ref}",
                  f"--out=gs://{BUCKET}/exported"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert {"saved_model.pb", "README.md", "vae_export.json", "config.json"} <= {
      n.split("/", 1)[1] for n in gcs.list(BUCKET, "exported/")}
  out = gcs.python(f"""
import json, numpy as np, tensorflow as tf
m = tf.saved_model.load("gs://{BUCKET}/exported")
s = m.signatures["sample"](num_samples=tf.constant(3), seed=tf.constant([1, 2], tf.int64),
                           temperature=tf.constant(1.0))
print(json.dumps({{k: list(v.shape) for k, v in s.items()}}))
""")
  shapes = json.loads(out.strip().splitlines()[-1])
  assert [3, 28, 28, 1] in shapes.values(), shapes


TENSORBOARD_QUERY = r"""
import json, socket, subprocess, sys, time, urllib.request
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
tb = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir=LOGDIR",
                       "--host=127.0.0.1", f"--port={port}", "--load_fast=false",
                       "--reload_task=blocking", "--reload_interval=0"],
                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
def get(path, raw=False):
  with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as r:
    data = r.read()
  return data if raw else json.loads(data)
try:
  deadline = time.time() + 120
  while True:
    try:
      get("/data/runs"); break
    except OSError:
      assert tb.poll() is None and time.time() < deadline, tb.stderr.read()
      time.sleep(0.5)
  out = {"scalar_tags": {run: sorted(tags) for run, tags in get("/data/plugin/scalars/tags").items()},
         "loss_steps": [p[1] for p in get("/data/plugin/scalars/scalars?run=train&tag=loss")],
         "elbo_steps": [p[1] for p in get("/data/plugin/scalars/scalars?run=eval&tag=elbo")],
         "image_tags": sorted(get("/data/plugin/images/tags").get("eval", {}))}
  entries = get("/data/plugin/images/images?run=eval&tag=reconstructions")
  out["image_steps"] = [e["step"] for e in entries]
  out["png"] = get("/data/plugin/images/individualImage?" + entries[-1]["query"], raw=True)[:8].hex()
  print(json.dumps(out))
finally:
  tb.terminate(); tb.wait()
"""


def test_tensorboard_shows_scalars_and_images_from_the_gs_logdir(gcs, reference):
  out = gcs.python(TENSORBOARD_QUERY.replace("LOGDIR", f"gs://{BUCKET}/ref/tensorboard"),
                   timeout=240)
  seen = json.loads(out.strip().splitlines()[-1])
  assert {"loss", "kl", "elbo"} <= set(seen["scalar_tags"]["train"])
  assert {"elbo", "bits_per_dim"} <= set(seen["scalar_tags"]["eval"])
  assert seen["loss_steps"] == [2, 4, 6, 8, 10, 12]
  assert seen["elbo_steps"] == [12]
  assert {"reconstructions", "prior_samples"} <= set(seen["image_tags"])
  assert seen["image_steps"] == [12]
  assert seen["png"] == "89504e470d0a1a0a"



def test_a_store_that_stops_answering_ends_the_run_with_one_error_and_loses_nothing(gcs, data):
  run = ["--config.num_train_steps=400", "--config.steps_per_loop=2",
         "--config.checkpoint_every_steps=4"]
  first = gcs.popen(cli.main_args(SMOKE, f"gs://{BUCKET}/outage", *RUN, *data, *run),
                    GCS_RETRY_CONFIG_MAX_RETRIES="2", **QUICK_RETRIES)
  deadline = time.time() + 180
  while not committed_steps(gcs, "outage"):
    assert first.poll() is None, first.communicate()[1][-3000:]
    assert time.time() < deadline
    time.sleep(0.1)
  gcs.set_faults(rate=1.0, mode="503")  # Every request from now on.
  step = committed_steps(gcs, "outage")[-1]  # Retention removes the oldest first.
  prefix = f"outage/checkpoints/{step}/"
  before = {n: gcs.read(BUCKET, n) for n in gcs.list(BUCKET, prefix)}
  _, stderr = first.communicate(timeout=240)
  gcs.set_faults()
  errors = [line for line in stderr.splitlines() if line.startswith("error:")]
  assert first.returncode == 1 and len(errors) == 1, stderr[-3000:]
  assert "Traceback" not in stderr, stderr[-3000:]
  # Says what it could not reach and that committed checkpoints are safe, e.g. "error: the
  # storage did not answer (when initiating an upload to gs://vae-test/outage/metrics.jsonl.
  # parts/000001.jsonl, All 2 retry attempts failed. ...). Committed checkpoints are unchanged;
  # start the same command again to resume once the storage answers."
  assert "gs://vae-test/outage/" in errors[0] and "committed" in errors[0].lower(), errors[0]
  # Step `step` is still committed, byte for byte (a later one may have been committed too).
  assert step in committed_steps(gcs, "outage")
  assert {n: gcs.read(BUCKET, n) for n in gcs.list(BUCKET, prefix)} == before

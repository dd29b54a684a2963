"""Where the train step's time goes: a tf.profiler trace of each way of running it, summed by op.

  python benchmarks/profile_step.py --config=configs/mnist.py --batch_size=32
  python benchmarks/profile_step.py --config=configs/mnist.py --batch_size=8 --steps=300

Profiles, one after the other on a fixed in-memory batch (no input pipeline, so only the step is
seen): vae_dist's Trainer with jit_compile on and off (steps_per_loop steps per call) and the
tutorial's plain loop (one tf.function call per batch). For each it prints the wall time per step
and the op time per step from the trace, summed over threads and grouped:

  conv      TensorFlow convolution kernels (oneDNN's _MklNative* on x86) or XLA convolution thunks
  matmul    dense layers
  other op  every other kernel: bias gradients, activations, the loss, Adam, XLA fusions

and how busy the cores were with kernels: op time / (wall time x CPU count). The rest is
dispatch, executor and thunk scheduling, threads waiting for each other, and other processes.

The trace directories can be opened in TensorBoard's profile plugin (pip install
tensorboard-plugin-profile). Reading the trace here uses TensorFlow's own XSpace proto.
"""
import collections
import glob
import os
import sys
import tempfile
import time

from absl import app
from absl import flags
from ml_collections import config_flags
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from vae_dist.model import objective
from vae_dist.train import state as train_state
from vae_dist.train import steps
try:
  from tensorflow.tsl.profiler.protobuf import xplane_pb2
except ImportError:  # The proto moved between releases; the trace itself is still written.
  xplane_pb2 = None

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_BATCH = flags.DEFINE_integer("batch_size", 32, "Global batch size.")
_STEPS = flags.DEFINE_integer("steps", 200, "Profiled steps per way (after a warm-up).")
_SPL = flags.DEFINE_integer("steps_per_loop", 50, "Host-loop length for the Trainer.")
_TRACE_DIR = flags.DEFINE_string("trace_dir", "", "Keep the traces here (default: a temp dir).")


def _group(op_type: str) -> str:
  name = op_type.lower()
  if "conv" in name:
    return "conv"
  if "matmul" in name or name.startswith(("dot", "mklmatmul")):
    return "matmul"
  return "other op"


def _summarise(xplane_file, num_steps):
  """Per step: op time by group and by op (summed over threads), from an XSpace file."""
  space = xplane_pb2.XSpace()
  with open(xplane_file, "rb") as f:
    space.ParseFromString(f.read())
  by_op = collections.Counter()
  for plane in space.planes:
    if plane.name != "/host:CPU":
      continue
    meta = plane.event_metadata
    for line in plane.lines:
      if not line.name.startswith(("tf_Compute", "tf_numa")):
        continue
      for ev in line.events:
        name = meta[ev.metadata_id].name
        if ":" in name and line.name.startswith("tf_Compute"):
          # A TensorFlow kernel: "<node name>:<kernel type>".
          node, kernel = name.rsplit(":", 1)
          by_op[f"{kernel} {node.split('/')[-2] if '/' in node else node}"] += ev.duration_ps
        elif not any(k in name for k in ("Executor", "Execute", "BlockUntilReady", "Process",
                                          "Callback", "Region")):
          by_op[f"xla {name}"] += ev.duration_ps  # An XLA thunk (fusion, convolution, dot).
  ms = {k: v / 1e9 / num_steps for k, v in by_op.items()}
  groups = collections.Counter()
  for k, v in ms.items():
    groups[_group(k.split(" ")[1] if k.startswith("xla ") else k.split(" ")[0])] += v
  return groups, ms


def main(argv):
  del argv
  config = _CONFIG.value
  b = _BATCH.value
  images = tf.cast(
      tf.random.stateless_uniform([b, config.image_size, config.image_size, config.channels],
                                  seed=[0, 1]) > 0.5, tf.float32)
  data = tf.data.Dataset.from_tensors({"image": images}).repeat()
  strategy = tf.distribute.get_strategy()

  def trainer_way(jit):
    c = config.copy_and_resolve_references()
    c.batch_size, c.steps_per_loop = b, _SPL.value
    c.jit_compile = "true" if jit else "false"
    state = train_state.create_train_state(c, strategy, total_steps=10**6)
    trainer = steps.Trainer(config=c, strategy=strategy, state=state)
    iterator = iter(strategy.distribute_datasets_from_function(lambda ctx: data))

    def run(n):
      for _ in range(n // _SPL.value):
        trainer.train_loop(iterator, tf.constant(_SPL.value, tf.int32))
      int(trainer.step.numpy())

    return run

  def plain_way():
    c = config.copy_and_resolve_references()
    c.batch_size = b
    state = train_state.create_train_state(c, strategy, total_steps=10**6)
    model, optimizer = state.model, state.optimizer
    likelihood = objective.Likelihood.from_config(c)

    # The tutorial's step, as vae_dist.benchmark times it (that module's flags clash with these).
    @tf.function
    def train_step(model, x, optimizer):
      eps = tf.random.normal([tf.shape(x)[0], c.latent_dim])
      with tf.GradientTape() as tape:
        terms = objective.elbo_terms(model, x, eps, training=True, likelihood=likelihood)
        loss = tf.reduce_mean(terms["recon"] + terms["kl"])
      gradients = tape.gradient(loss, model.trainable_variables)
      optimizer.apply_gradients(zip(gradients, model.trainable_variables))

    iterator = iter(data)

    def run(n):
      for _ in range(n):
        train_step(model, next(iterator)["image"], optimizer)
      int(optimizer.iterations.numpy())

    return run

  ways = {"vae_dist jit_compile=True": trainer_way(True),
          "vae_dist jit_compile=False": trainer_way(False),
          "plain loop": plain_way()}
  root = _TRACE_DIR.value or tempfile.mkdtemp(prefix="vae_dist_profile_")
  n = max(_SPL.value, _STEPS.value // _SPL.value * _SPL.value)
  for label, run in ways.items():
    run(_SPL.value)
    run(_SPL.value)  # Compiled and warm.
    t0 = time.perf_counter()
    run(n)
    wall = (time.perf_counter() - t0) / n * 1e3
    logdir = os.path.join(root, label.replace(" ", "_").replace("=", "_"))
    tf.profiler.experimental.start(logdir)
    run(n)
    tf.profiler.experimental.stop()
    print(f"\n== {label}, batch {b}: {wall:.2f} ms/step unprofiled, {b / wall * 1e3:.0f} images/s"
          f" (load average {os.getloadavg()[0]:.1f}); trace in {logdir}")
    files = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    if xplane_pb2 is None or not files:
      continue
    groups, ms = _summarise(files[0], n)
    for g in ("conv", "matmul", "other op"):
      print(f"  {g:9s} {groups[g]:7.3f} ms/step of thread time")
    busy = sum(groups.values()) / (wall * os.cpu_count())
    print(f"  cores busy in kernels: {busy:.0%} of {os.cpu_count()} x {wall:.2f} ms")
    print("  top ops (ms/step, summed over threads):")
    for k, v in sorted(ms.items(), key=lambda kv: -kv[1])[:12]:
      print(f"    {v:7.3f}  {k[:100]}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)

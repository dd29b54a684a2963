"""What the host can compute and what a training image costs: the benchmarks' FLOP counts.

matmul_gflops times the host's (or first accelerator's) float32 matrix product; count_flops counts
the training FLOPs per image four ways (layer shapes, the traced graph's conv/matmul ops, TF's
profiler, XLA's optimized HLO) so a GFLOP/s figure rests on a checked count. Used by speed.py
and input_rates.py.
"""
import math
import re
import statistics
import time

import tensorflow as tf

from vae_dist.model import objective
from vae_dist.train import state as train_state

_CONV_MATMUL_OPS = ("Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter", "MatMul",
                    "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3")


# ---- the host's matrix-product peak -------------------------------------------------------------


def _compute_device() -> str:
  """The first accelerator (TPU, then GPU), else the CPU: where the matmul peak is measured."""
  for kind in ("TPU", "GPU", "CPU"):
    devices = tf.config.list_logical_devices(kind)
    if devices:
      return devices[0].name
  return "/device:CPU:0"


def matmul_gflops(n: int, rounds: int, round_seconds: float) -> dict:
  """float32 GFLOP/s of an n x n by n x n tf.matmul on one device, median of rounds."""
  device = _compute_device()
  with tf.device(device):
    a = tf.random.stateless_normal([n, n], seed=[1, 2])
    b = tf.random.stateless_normal([n, n], seed=[3, 4])
  # The sum makes every product element needed and costs n^2 of the 2 n^3 FLOPs. A TPU runs
  # compiled programs only; elsewhere TensorFlow's own kernel is what the plain loop uses.
  fn = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)), jit_compile="TPU" in device)

  def run():
    with tf.device(device):
      return fn(a, b).numpy()

  run()
  t0 = time.perf_counter()
  run()
  reps = max(1, int(round_seconds / max(time.perf_counter() - t0, 1e-6)))
  rates = []
  for _ in range(rounds):
    t0 = time.perf_counter()
    for _ in range(reps):
      run()
    rates.append(2 * n**3 * reps / (time.perf_counter() - t0) / 1e9)
  return {
      "size": n,
      "gflops_per_sec": statistics.median(rates),
      "gflops_per_sec_min": min(rates),
      "gflops_per_sec_max": max(rates),
      "device": device,
  }


# ---- FLOPs per training image -------------------------------------------------------------------


def _layer_flops(layer, in_shape):
  """Forward multiply-add FLOPs (2 per MAC) of one Keras layer per example; and its output shape."""
  out_shape = tuple(layer.compute_output_shape((1,) + tuple(in_shape)))[1:]
  if isinstance(layer, tf.keras.layers.Conv2DTranspose):
    # Every input pixel scatters through the whole kernel: in_h * in_w * k_h * k_w * c_in * c_out.
    kh, kw = layer.kernel_size
    flops = 2 * in_shape[0] * in_shape[1] * kh * kw * in_shape[2] * layer.filters
  elif isinstance(layer, tf.keras.layers.Conv2D):
    kh, kw = layer.kernel_size
    flops = 2 * out_shape[0] * out_shape[1] * out_shape[2] * kh * kw * in_shape[2]
  elif isinstance(layer, tf.keras.layers.Dense):
    flops = 2 * in_shape[-1] * layer.units
  else:
    flops = 0  # Activations, BatchNorm, reshapes: elementwise, counted by the graph count.
  return flops, out_shape


def analytic_flops(model, config) -> dict:
  """Conv and dense FLOPs per image from the layer shapes.

  Training does the forward product once and, for every layer, the weight gradient (same FLOPs)
  and the input gradient (same FLOPs) except for the first layer, whose input is the data.
  """
  shape = (config.image_size, config.image_size, config.channels)
  per_layer = []
  for layer in model.encoder.layers:
    f, shape = _layer_flops(layer, shape)
    per_layer.append((layer.name, f))
  shape = (config.latent_dim,)
  for layer in model.decoder.layers:
    f, shape = _layer_flops(layer, shape)
    per_layer.append((layer.name, f))
  forward = sum(f for _, f in per_layer)
  first = next(f for _, f in per_layer if f)
  return {"forward": forward, "train": 3 * forward - first,
          "layers": {name: f for name, f in per_layer if f}}


def _live_ops(graph, roots):
  """Ops that the function actually runs: ancestors of its outputs and side-effect ops."""
  seen = set()
  stack = list(roots)
  while stack:
    op = stack.pop()
    if op.name in seen:
      continue
    seen.add(op.name)
    stack.extend(t.op for t in op.inputs)
    stack.extend(op.control_inputs)
  return [op for op in graph.get_operations() if op.name in seen]


def _exact_op_flops(op):
  """Exact multiply-add FLOPs of a conv/matmul graph op from its tensor shapes (NHWC)."""
  t = op.type
  if t == "Conv2D":
    kh, kw, cin, _ = op.inputs[1].shape.as_list()
    return 2 * op.outputs[0].shape.num_elements() * kh * kw * cin
  if t in ("Conv2DBackpropInput", "Conv2DBackpropFilter"):
    # One MAC per (out_backprop element, kernel tap, input channel), for both gradients.
    if t == "Conv2DBackpropInput":
      kh, kw, cin, _ = op.inputs[1].shape.as_list()
    else:
      kh, kw, cin, _ = op.outputs[0].shape.as_list()
    return 2 * op.inputs[2].shape.num_elements() * kh * kw * cin
  a = op.inputs[0].shape.as_list()
  if t == "MatMul":
    k = a[0] if op.get_attr("transpose_a") else a[1]
  else:
    k = a[-2] if op.get_attr("adj_x") else a[-1]
  return 2 * op.outputs[0].shape.num_elements() * k


def _profiler_flops(graph) -> dict:
  """tf.compat.v1.profiler's FLOP count of a graph, by op type (its registered formulas)."""
  opts = (tf.compat.v1.profiler.ProfileOptionBuilder(
      tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()).with_empty_output().build())
  node = tf.compat.v1.profiler.profile(graph, options=opts, cmd="op")
  by_type = {}
  while node is not None:  # The op view nests each op type under the previous one.
    if node.name != "_TFProfRoot":
      by_type[node.name] = node.float_ops
    node = node.children[0] if node.children else None
  return by_type


def _hlo_conv_dot_flops(hlo_text: str):
  """Multiply-add FLOPs of every convolution and dot in an HLO module's text; and what it skipped.

  Convolutions are counted as the HLO states them: XLA writes a stride-2 transposed convolution
  as a convolution over the input dilated with zeros (lhs_dilate), 4x the products the layer
  needs; whether the CPU kernel skips the zeros is not visible here (timing says it mostly does).
  """
  shapes = {}
  define = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*\w+\[([\d,]*)\]")
  for line in hlo_text.splitlines():
    m = define.match(line)
    if m:
      shapes[m.group(1)] = [int(d) for d in m.group(2).split(",") if d]
  total, skipped = 0, []
  inst = re.compile(r"=\s*\w+\[([\d,]*)\]\S*\s+(convolution|dot|custom-call)\(([^)]*)\)(.*)$")
  for line in hlo_text.splitlines():
    m = inst.search(line)
    if not m:
      continue
    out = math.prod(int(d) for d in m.group(1).split(",") if d)
    operands = [o.strip().lstrip("%").split(" ")[-1].lstrip("%") for o in m.group(3).split(",")]
    rest = m.group(4)
    if m.group(2) == "custom-call":
      skipped.append(line.strip()[:120])
      continue
    if m.group(2) == "convolution":
      labels = re.search(r"dim_labels=\w+_(\w+)->", rest).group(1)
      kernel = shapes[operands[1]]
      window = math.prod(kernel[i] for i, c in enumerate(labels) if c.isdigit())
      groups = re.search(r"feature_group_count=(\d+)", rest)
      cin = kernel[labels.index("i")]
      total += 2 * out * window * cin // (int(groups.group(1)) if groups else 1)
    else:
      lhs = shapes[operands[0]]
      dims = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", rest).group(1)
      total += 2 * out * math.prod(lhs[int(d)] for d in dims.split(",") if d)
  return total, skipped


def plain_step_fn(config):
  """The tutorial's train step body on vae_dist's objective: tape, gradients, apply_gradients."""
  likelihood = objective.Likelihood.from_config(config)

  def train_step(model, x, optimizer, eps=None):
    if eps is None:
      # Stateful noise, as the tutorial's reparameterize draws it.
      eps = tf.random.normal([tf.shape(x)[0], config.latent_dim])
    with tf.GradientTape() as tape:
      terms = objective.elbo_terms(model, x, eps, training=True, likelihood=likelihood)
      loss = tf.reduce_mean(terms["recon"] + terms["kl"])
      scaled = loss
      if isinstance(optimizer, tf.keras.optimizers.LossScaleOptimizer):
        scaled = optimizer.scale_loss(loss)
    gradients = tape.gradient(scaled, model.trainable_variables)
    optimizer.apply_gradients(zip(gradients, model.trainable_variables))
    return loss

  return train_step


def count_flops(config, batch_size: int) -> dict:
  """Training FLOPs per image, counted four ways.

  - `per_image_train` (the figure used for GFLOP/s): conv and dense FLOPs from the layer shapes
    (analytic_flops), checked against
  - `graph_conv_matmul_per_image`: every Conv2D / Conv2DBackpropInput / Conv2DBackpropFilter /
    MatMul op that runs in the traced plain train step (get_concrete_function; ops that nothing
    uses are left out, as TensorFlow prunes them), each counted exactly from its tensor shapes;
  - `profiler_per_image`: tf.compat.v1.profiler's float_operation count of the same graph,
    all op types with a registered FLOP formula (its conv-gradient formulas divide by stride^2,
    an approximation for 'valid' padding), by op type in `profiler_by_op_type`;
  - `xla_conv_dot_per_image`: convolutions and dots in the optimized HLO of the same step
    compiled with XLA (experimental_get_compiler_ir), as XLA writes them (_hlo_conv_dot_flops).

  The live-op filter matters: the tape also builds the first convolution's input gradient,
  which nothing reads (the images are not variables) and TensorFlow never runs.
  """
  state = train_state.create_train_state(config, tf.distribute.get_strategy(),
                                         total_steps=10**6)
  model, optimizer = state.model, state.optimizer
  analytic = analytic_flops(model, config)
  step_fn = plain_step_fn(config)
  spec = tf.TensorSpec([batch_size, config.image_size, config.image_size, config.channels],
                       tf.float32)
  concrete = tf.function(step_fn).get_concrete_function(model, spec, optimizer)
  graph = concrete.graph
  roots = [t.op for t in graph.outputs] + list(graph.control_outputs)
  live = _live_ops(graph, roots)
  graph_flops = sum(_exact_op_flops(op) for op in live if op.type in _CONV_MATMUL_OPS)
  nested = sorted({op.type for op in live if op.type in (
      "PartitionedCall", "StatefulPartitionedCall", "While", "If", "StatelessWhile")})
  by_type = _profiler_flops(graph)
  out = {
      "method": "analytic conv/dense FLOPs from layer shapes, verified against the exact "
                "conv/matmul op count of the traced train-step graph",
      "per_image_forward": analytic["forward"],
      "per_image_train": analytic["train"],
      "per_layer_forward": analytic["layers"],
      "graph_conv_matmul_per_image": graph_flops / batch_size,
      "analytic_matches_graph": abs(graph_flops - analytic["train"] * batch_size) < 1,
      "graph_uncounted_call_ops": nested,
      "profiler_per_image": sum(by_type.values()) / batch_size,
      "profiler_by_op_type": {k: v / batch_size for k, v in sorted(by_type.items())},
  }
  eps_spec = tf.TensorSpec([batch_size, config.latent_dim], tf.float32)
  try:
    xla_fn = tf.function(lambda x, eps: step_fn(model, x, optimizer, eps), jit_compile=True)
    hlo = xla_fn.experimental_get_compiler_ir(spec, eps_spec)(stage="optimized_hlo")
    xla_flops, skipped = _hlo_conv_dot_flops(hlo)
    out["xla_conv_dot_per_image"] = xla_flops / batch_size
    out["xla_uncounted_custom_calls"] = len(skipped)
  except (tf.errors.OpError, ValueError, NotImplementedError, AttributeError) as e:
    # Some platforms cannot show the compiled IR; the graph count above still stands.
    out["xla_conv_dot_per_image"] = None
    out["xla_error"] = str(e).splitlines()[0][:200]
  return out

"""Times the tutorial decoder's big layer (3x3 stride-2 transposed conv, 14x14x64 -> 28x28x32)
two ways, forward plus both gradients, with and without XLA:

  native    tf.nn.conv2d_transpose (oneDNN without XLA; a convolution over zero-dilated input
            under XLA)
  subpixel  the same layer as one stride-1 2x2 convolution to 4 x 32 channels, then
            depth_to_space: the same weights, no zero-dilated input

  python benchmarks/transposed_conv_forms.py --batch_size=32

Prints the largest difference between the two forms' outputs, then ms per step for each.
"""
import time

from absl import app
from absl import flags
import tensorflow as tf

_BATCH = flags.DEFINE_integer("batch_size", 32, "Images per step.")
_STEPS = flags.DEFINE_integer("steps", 50, "Steps per timing round (best of 5 rounds).")


def subpixel(x, w, b):
  """conv2d_transpose(x, w, stride 2, SAME) + b as a stride-1 convolution and depth_to_space.

  Output row 2j takes kernel row 0 at input row j and kernel row 2 at row j - 1; output row
  2j + 1 takes kernel row 1 at row j (the same for columns). A zero kernel row (index 3) fills
  the tap that a phase does not use.
  """
  wt = tf.transpose(w, [0, 1, 3, 2])  # (kh, kw, in, out)
  wp = tf.pad(wt, [[0, 1], [0, 1], [0, 0], [0, 0]])
  taps = tf.constant([[2, 0], [3, 1]])  # [output phase][input row j - 1, j] -> kernel row.
  k = tf.gather(tf.gather(wp, taps, axis=0), taps, axis=2)  # (a, ti, b, tj, in, out)
  k = tf.transpose(k, [1, 3, 4, 0, 2, 5])  # (ti, tj, in, a, b, out)
  k = tf.reshape(k, [2, 2, w.shape[3], 4 * w.shape[2]])
  y = tf.nn.conv2d(tf.pad(x, [[0, 0], [1, 0], [1, 0], [0, 0]]), k, 1, "VALID")
  return tf.nn.depth_to_space(y, 2) + b


def native(x, w, b):
  shape = [tf.shape(x)[0], 2 * x.shape[1], 2 * x.shape[2], w.shape[2]]
  return tf.nn.conv2d_transpose(x, w, shape, 2, "SAME") + b


def main(argv):
  del argv
  x = tf.random.stateless_normal([_BATCH.value, 14, 14, 64], seed=[0, 1])
  w = tf.Variable(tf.random.stateless_normal([3, 3, 32, 64], seed=[0, 2]) * 0.1)
  b = tf.Variable(tf.zeros([32]))
  diff = tf.reduce_max(tf.abs(subpixel(x, w, b) - native(x, w, b)))
  print(f"largest difference between the forms: {float(diff):.2g}")
  for name, layer in (("native", native), ("subpixel", subpixel)):
    for jit in (False, True):

      @tf.function(jit_compile=jit)
      def step(x, layer=layer):
        with tf.GradientTape() as tape:
          tape.watch(x)
          y = layer(x, w, b)
          loss = tf.reduce_sum(y * y)
        grads = tape.gradient(loss, [x, w, b])
        return loss + sum(tf.reduce_sum(g) for g in grads)

      step(x).numpy()
      best = float("inf")
      for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(_STEPS.value):
          out = step(x)
        out.numpy()
        best = min(best, (time.perf_counter() - t0) / _STEPS.value)
      print(f"{name:9s} jit_compile={jit!s:5s} {best * 1e3:7.3f} ms/step "
            f"({_BATCH.value / best:,.0f} images/s)")


if __name__ == "__main__":
  app.run(main)

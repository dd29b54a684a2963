"""The tutorial's model on binarised Fashion-MNIST, trained for time to quality on a CPU.

  python -m vae_dist.main --config=configs/fashion_mnist_fast.py

Same model and objective as configs/mnist.py with --config.dataset=fashion_mnist (the TensorFlow
CVAE tutorial: conv 32/64 stride 2, dense to 2 x latent, dense 7x7x32 then transposed convs
64/32/1, latent 2, static binarisation at 0.5, Bernoulli likelihood); only the training differs:

- Batch 128 instead of 32: 1.38x more images per second on a 2-core CPU (2,711 vs 1,968 with
  jit_compile=False, benchmarks/results/mnist_full.json), and the larger batch takes a larger
  step.
- Adam at 8e-3 instead of a constant 1e-4: 100 warm-up steps, then a cosine decay to zero. The
  high rate does the early progress, the decay lands it: -191.9 nats after 702 steps (1.5
  epochs), where the tutorial's recipe reaches about -194 after 18,750 steps (10 epochs).
  Rates of 6e-3 to 1e-2 and seeds 0 and 1 all ended between -191.2 and -192.4.
- jit_compile='auto' (the default) leaves XLA off on CPUs, where its convolutions are slower
  than TensorFlow's own (oneDNN) ones at this batch (1,937 images/s with XLA, 0.71x); the host
  loop stays.
- One evaluation at the end, in batches of 2,000; no image or scatter summaries; one checkpoint.

BUILD_NOTES.md has the side-by-side times.
"""
from vae_dist.config import checks
from vae_dist.config import defaults


def get_config(arg=None):
  checks.check_arg(arg, ('smoke',), __file__)
  c = defaults.base_config()
  c.name = "fashion_mnist_fast"
  c.dataset = "fashion_mnist"
  defaults.tutorial_model(c)
  c.batch_size = 128
  c.eval_batch_size = 2000
  c.optimizer = "adam"
  c.learning_rate = 8e-3
  c.warmup_steps = 100
  c.lr_schedule = "cosine"  # Warm-up to 8e-3, then cosine decay to 0 at the last step.
  c.num_train_steps = 702  # 1.5 epochs of 60,000 // 128 = 468 steps.
  c.log_every_steps = 39
  c.eval_every_steps = 702
  c.checkpoint_every_steps = 702
  c.num_image_examples = 0
  c.num_scatter_examples = 0
  if arg == "smoke":
    defaults.smoke(c)
    c.eval_batch_size = -1
    c.warmup_steps = 0
    c.num_image_examples = 0  # As in the full run: no summaries.
  return c

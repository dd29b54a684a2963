"""A tiny trained run for the tests of generate, evaluate and export.

The images are stripes rather than noise: a vertical bar whose column is the example's one hidden
factor, so even a few dozen steps teach the VAE a latent that matters (random pixels would leave
the decoder ignoring z, and every likelihood bound equal to the ELBO). The labels are the bar's
column // 3 (0..8) plus 9 for an empty image, Fashion-MNIST's ten classes. Runs are trained with
the real command line (tests/cli.py) on IDX files written with tests/datagen.py's encoder.

`shared_run` trains a run once per test session, even when pytest-xdist spreads the tests of one
module over several workers (each of which would otherwise build its own module fixture): the
workers share the session's base temporary directory and take turns through a file lock.
"""
import contextlib
import fcntl
import hashlib
import os

import numpy as np

import cli
import datagen

# The smoke config of the tutorial model, trained long enough to learn the stripes.
TRAIN_FLAGS = [
    "--config.dataset=fashion_mnist", "--config.num_train_steps=60", "--config.steps_per_loop=20",
    "--config.log_every_steps=20", "--config.eval_every_steps=60",
    "--config.checkpoint_every_steps=20", "--config.max_to_keep=10", "--config.learning_rate=0.003",
    "--config.eval_num_examples=-1", "--config.num_image_examples=0",
]
NUM_CHECKPOINTS = 3  # Steps 20, 40 and 60.
NUM_TEST = 20


def stripes(n: int, seed: int):
  """n images [n, 28, 28] uint8 with one 3-pixel vertical bar, and their labels."""
  rng = np.random.default_rng(seed)
  images = np.zeros((n, 28, 28), np.uint8)
  labels = np.full((n,), 9, np.uint8)
  cols = rng.integers(0, 26, size=n)
  for i, c in enumerate(cols):
    if i % 10 == 9:
      continue  # Every tenth image is empty: label 9.
    images[i, 2:26, c:c + 3] = 255
    labels[i] = min(8, c // 3)
  return images, labels


def write_stripes_idx(directory, num_train: int = 96, num_test: int = NUM_TEST, seed: int = 0):
  """The four IDX files of a stripes data set, named like Fashion-MNIST's downloads."""
  os.makedirs(directory, exist_ok=True)
  out = {}
  for split, count, s in (("train", num_train, seed), ("test", num_test, seed + 1)):
    images, labels = stripes(count, s)
    names = datagen.IDX_FILES[split]
    for name, array, magic in ((names[0], images, 0x803), (names[1], labels, 0x801)):
      with open(os.path.join(directory, name), "wb") as f:
        f.write(datagen.idx_bytes(array, magic))
    out[split] = (images, labels)
  return out


def train(tmp_root, *extra_flags, name: str = "run") -> dict:
  """Trains a tiny run through the command line; returns its workdir and data places."""
  idx_dir = os.path.join(str(tmp_root), "idx")
  data_dir = os.path.join(str(tmp_root), "tfds")
  data = write_stripes_idx(idx_dir)
  workdir = os.path.join(str(tmp_root), name)
  proc = cli.run_main("configs/mnist.py:smoke", workdir, *TRAIN_FLAGS,
                      *cli.data_flags(idx_dir, data_dir), *extra_flags)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return {"workdir": workdir, "idx_dir": idx_dir, "data_dir": data_dir, "data": data}


def _session_root(tmp_path_factory):
  base = tmp_path_factory.getbasetemp()
  # Under xdist each worker's base is <session>/popen-gwN; the session dir is shared.
  root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
  path = root / "shared_trained_runs"
  path.mkdir(exist_ok=True)
  return path


@contextlib.contextmanager
def _locked(path):
  with open(path, "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def shared_run(tmp_path_factory, *extra_flags) -> dict:
  """A run trained with TRAIN_FLAGS + extra_flags, trained once per session and then reused.

  Returns:
    {'workdir', 'idx_dir', 'data_dir', 'data': {'train': (images, labels), 'test': ...}}.
  """
  key = hashlib.sha256(" ".join(TRAIN_FLAGS + list(extra_flags)).encode()).hexdigest()[:12]
  root = _session_root(tmp_path_factory) / key
  with _locked(str(root) + ".lock"):
    done = root / "DONE"
    if not done.exists():
      root.mkdir(exist_ok=True)
      train(root, *extra_flags)
      done.write_text("trained\n")
  return {"workdir": str(root / "run"), "idx_dir": str(root / "idx"),
          "data_dir": str(root / "tfds"), "data": {
              "train": stripes(96, 0), "test": stripes(NUM_TEST, 1)}}

"""A hostile image folder: 8 images, a symlink loop, a symlinked duplicate, a FIFO, a dangling link.

The run must neither hang (the FIFO), nor count an image twice or leak one into both splits (the
links), nor crash at its first evaluation because the eval split holds a single image.
"""
import os

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

import cli


def _hostile_folder(root):
  os.makedirs(root)
  rng = np.random.default_rng(3)
  for i in range(8):
    Image.fromarray((rng.random((28, 28)) * 255).astype(np.uint8)).save(f"{root}/{i}.png")
  os.symlink(".", f"{root}/loop")  # loop/loop/loop/... would list every image again and again.
  os.symlink("3.png", f"{root}/again_3.png")  # The same file under a second name.
  os.link(f"{root}/5.png", f"{root}/hard_5.png")  # And under a third, as a hard link.
  os.mkfifo(f"{root}/fifo.png")  # Opening it for reading blocks until someone writes.
  os.symlink("gone.png", f"{root}/dangling.png")


def test_hostile_tiny_folder_trains_and_evaluates(tmp_path):
  folder = str(tmp_path / "images")
  _hostile_folder(folder)
  workdir = str(tmp_path / "run")
  data_dir = str(tmp_path / "tfds")
  proc = cli.run_main("configs/mnist.py:smoke", workdir, "--config.dataset=image_folder",
                      f"--config.image_folder={folder}", f"--config.data_dir={data_dir}",
                      "--config.batch_size=4", timeout=240)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "skipped 2 path(s) that are not a regular file: dangling.png, fifo.png" in proc.stderr
  assert ("skipped 2 path(s) that are a second name of a file already listed: again_3.png, "
          "hard_5.png") in proc.stderr
  assert "The eval split has 1 image(s): TensorBoard gets no interpolation strip" in proc.stderr
  # Each of the 8 files once, 7 to train and 1 to test, none in both.
  (version_dir,) = [d for d, _, names in os.walk(data_dir) if "dataset_info.json" in names]
  builder = tfds.builder_from_directory(version_dir)
  names = {split: [ex["filename"].decode() for ex in tfds.as_numpy(builder.as_dataset(split))]
           for split in ("train", "test")}
  assert sorted(names["train"] + names["test"]) == [f"{i}.png" for i in range(8)]
  assert len(names["test"]) == 1
  # The run got through its evaluation and its checkpoint.
  metrics = cli.read_metrics(workdir)
  assert any(m.get("eval/examples") == 1 for m in metrics), metrics
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "4"))

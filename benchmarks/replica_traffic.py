"""What one traced train step sends between replicas: all-reduces, elements, cross-device edges.

  python benchmarks/replica_traffic.py [--config=fashion_mnist] [--replicas=2]

Traces Trainer.train_loop (one step) under MirroredStrategy over logical CPUs whose cross-device
ops count what they are asked to reduce and broadcast, then counts the data-flow edges of the
loop body whose ends sit on different devices (every tensor a step moves between replicas).
Prints one JSON object. tests/test_replicas.py asserts the same counts.
"""
import json
import os
import sys

from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

_CONFIG = flags.DEFINE_string("config", "fashion_mnist", "configs/<name>.py, its smoke variant.")
_REPLICAS = flags.DEFINE_integer("replicas", 2, "Logical CPU devices, one replica each.")


def main(argv):
  del argv
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  cpus = tf.config.list_physical_devices("CPU")
  tf.config.set_logical_device_configuration(
      cpus[0], [tf.config.LogicalDeviceConfiguration()] * _REPLICAS.value)
  import replica_traffic_probe  # pylint: disable=g-import-not-at-top
  print(json.dumps(replica_traffic_probe.step_traffic(_CONFIG.value, _REPLICAS.value), indent=2))


if __name__ == "__main__":
  app.run(main)

"""A real multi-worker TensorFlow program for the launcher tests.

Each worker builds `tf.distribute.MultiWorkerMirroredStrategy` from its cluster description and
takes part in one collective all-reduce: worker i contributes i + 1, so every worker must see
1 + 2 + ... + N. Running it proves that a launcher gave each process a consistent cluster (the
all-reduce cannot finish otherwise), not merely that the processes started.

The cluster comes from `TF_CONFIG` (what `launch/multiworker.py` sets) or, when
`VAE_DIST_CLUSTER=slurm`, from `SlurmClusterResolver` built the way the training program is
expected to build it (see `slurm_cluster_resolver` below and `launch/slurm.sbatch`).

Flags it does not define (what a launcher passes to the training program, e.g. --config=... or
--config.strategy=...) are accepted and echoed in the RESULT line, so tests can check that they
arrived verbatim.

Failure modes for the tests:
  --exit_code_rank=K --exit_code=C   worker K exits with C after joining the cluster, so its
                                     peers block in the all-reduce waiting for it.
"""
import json
import os
import sys

from absl import app
from absl import flags

_EXIT_CODE_RANK = flags.DEFINE_integer("exit_code_rank", -1,
                                       "Worker that exits early with --exit_code (-1: none).")
_EXIT_CODE = flags.DEFINE_integer("exit_code", 3, "Exit status of --exit_code_rank.")

# Ports that Slurm does not hand out: the resolver derives every worker's address from this base.
_SLURM_PORT_BASE_ENV = "VAE_DIST_SLURM_PORT_BASE"


def slurm_cluster_resolver():
  """SlurmClusterResolver that works on CPU and GPU nodes alike.

  The stock resolver counts GPUs with nvidia-smi (missing on CPU nodes), divides by GPUs per task
  (a zero step on CPU nodes) and rewrites CUDA_VISIBLE_DEVICES (which would undo Slurm's own GPU
  binding). So GPU bookkeeping is switched off and the strategy is told the GPUs this process
  actually sees.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  class _Resolver(tf.distribute.cluster_resolver.SlurmClusterResolver):

    def __init__(self, num_gpus, port_base):
      self._visible_gpus = num_gpus
      # One placeholder "GPU" per task keeps the base class's allocation loop well defined;
      # it is never used because auto_set_gpu is off and num_accelerators is overridden.
      max_tasks = max(int(n) for n in _expand_tasks_per_node(
          os.environ.get("SLURM_STEP_TASKS_PER_NODE", "1")))
      super().__init__(port_base=port_base, gpus_per_node=max_tasks, gpus_per_task=1,
                       auto_set_gpu=False)

    def num_accelerators(self, task_type=None, task_id=None, config_proto=None):
      del task_type, task_id, config_proto
      return {"GPU": self._visible_gpus}

  num_gpus = len(tf.config.list_physical_devices("GPU"))
  port_base = int(os.environ.get(_SLURM_PORT_BASE_ENV, "8888"))
  return _Resolver(num_gpus, port_base)


def _expand_tasks_per_node(spec):
  """'2(x3),1' -> [2, 2, 2, 1] (Slurm's SLURM_STEP_TASKS_PER_NODE format)."""
  counts = []
  for part in spec.split(","):
    count, _, repeat = part.partition("(x")
    counts.extend([int(count)] * (int(repeat.rstrip(")")) if repeat else 1))
  return counts


def main(argv):
  extra_args = argv[1:]
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  if os.environ.get("VAE_DIST_CLUSTER", "") == "slurm":
    resolver = slurm_cluster_resolver()
  else:
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
  strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
  task_id = strategy.cluster_resolver.task_id
  num_workers = strategy.num_replicas_in_sync
  print(f"worker {task_id} of {num_workers} joined, pid {os.getpid()}", flush=True)

  if task_id == _EXIT_CODE_RANK.value:
    print(f"worker {task_id} exiting with {_EXIT_CODE.value} on purpose", flush=True)
    # os._exit skips TF's shutdown handshake, like a crash would.
    os._exit(_EXIT_CODE.value)  # pylint: disable=protected-access

  @tf.function
  def contribution():
    ctx = tf.distribute.get_replica_context()
    return tf.cast(ctx.replica_id_in_sync_group, tf.float32) + 1.0

  per_replica = strategy.run(contribution)
  total = float(strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None))
  expected = num_workers * (num_workers + 1) / 2
  print("RESULT " + json.dumps({"task_id": task_id, "total": total, "expected": expected,
                               "extra_args": extra_args}), flush=True)
  if total != expected:
    sys.exit(1)


def _parse_known_flags(argv):
  # Unknown flags stay in argv (see the module docstring) instead of failing the program.
  return flags.FLAGS(argv, known_only=True)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_known_flags)

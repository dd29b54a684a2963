"""Maps config.strategy (with --tpu, TF_CONFIG or a Slurm allocation) to a tf.distribute.Strategy.

Everything else in the pipeline only sees the returned strategy.
"""
import json
import os
import re

from absl import logging
import ml_collections
import tensorflow as tf

from vae_dist.errors import ConfigError
from vae_dist.errors import first_line
from vae_dist.errors import WorkdirError


def configure_host_devices(config: ml_collections.ConfigDict) -> None:
  """Splits the host CPU into config.num_cpu_devices logical devices.

  Must run before TensorFlow initialises its devices (before any op or strategy is created).
  """
  n = config.num_cpu_devices
  if n <= 1:
    return
  cpus = tf.config.list_physical_devices("CPU")
  try:
    tf.config.set_logical_device_configuration(cpus[0],
                                               [tf.config.LogicalDeviceConfiguration()] * n)
  except RuntimeError as e:  # Devices already initialised; enough of them will do.
    current = len(tf.config.list_logical_devices("CPU"))
    if current < n:
      raise ConfigError("num_cpu_devices",
                        f"cannot split the CPU into {n} devices after TensorFlow started with "
                        f"{current}: {e}") from None


def _tf_config_workers() -> int:
  spec = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
  return sum(len(spec.get(kind, [])) for kind in ("chief", "worker"))


def _tpu_configured(config) -> bool:
  return bool(config.tpu or os.environ.get("TPU_NAME") or os.path.exists("/dev/accel0") or
              os.path.exists("/dev/vfio/0"))


def resolve_strategy_name(config: ml_collections.ConfigDict) -> str:
  """'auto' becomes tpu, multi_worker_mirrored, mirrored or default; others stay as they are."""
  name = config.strategy
  if name != "auto":
    return name
  if _tpu_configured(config):
    return "tpu"
  if _tf_config_workers() > 1 or os.environ.get("VAE_DIST_CLUSTER") == "slurm":
    return "multi_worker_mirrored"
  if len(tf.config.list_physical_devices("GPU")) > 1 or config.num_cpu_devices > 1:
    return "mirrored"
  return "default"


def _local_devices():
  gpus = tf.config.list_logical_devices("GPU")
  return gpus if gpus else tf.config.list_logical_devices("CPU")


def mirrored_strategy(config: ml_collections.ConfigDict) -> tf.distribute.MirroredStrategy:
  """All local GPUs, or the first num_cpu_devices logical CPUs when there is no GPU."""
  gpus = tf.config.list_logical_devices("GPU")
  if gpus:
    return tf.distribute.MirroredStrategy(devices=[d.name for d in gpus])
  cpus = tf.config.list_logical_devices("CPU")
  if config.num_cpu_devices > 1:
    cpus = cpus[:config.num_cpu_devices]
  if len(cpus) < 2:
    logging.warning("strategy='mirrored' with one CPU device; set config.num_cpu_devices to "
                    "split the CPU into several.")
  # On CPUs a plain reduction through one device is the fastest, and unlike collective ops it
  # holds no process-wide group state (several strategies may live in one process, as in tests).
  return tf.distribute.MirroredStrategy(
      devices=[d.name for d in cpus], cross_device_ops=tf.distribute.ReductionToOneDevice())


class _SlurmResolver(tf.distribute.cluster_resolver.SlurmClusterResolver):
  """SlurmClusterResolver that works on CPU nodes and leaves Slurm's GPU binding alone.

  The stock resolver runs nvidia-smi to count GPUs (missing on CPU nodes), divides by
  gpus_per_task (0 on CPU nodes) and rewrites CUDA_VISIBLE_DEVICES. Here the tasks per node come
  from Slurm, the GPU count from TensorFlow, and Slurm's own GPU binding is kept.
  """

  def __init__(self):
    self._gpus = len(tf.config.list_physical_devices("GPU"))
    counts = os.environ.get("SLURM_STEP_TASKS_PER_NODE", "1").split(",")
    per_node = max(int(c.partition("(x")[0]) for c in counts)
    super().__init__(port_base=int(os.environ.get("VAE_DIST_SLURM_PORT_BASE", "8888")),
                     gpus_per_node=per_node, gpus_per_task=1, auto_set_gpu=False)

  def num_accelerators(self, task_type=None, task_id=None, config_proto=None):
    del task_type, task_id, config_proto
    return {"GPU": self._gpus}


def _cluster_resolver():
  if os.environ.get("VAE_DIST_CLUSTER") == "slurm":
    return _SlurmResolver()
  return tf.distribute.cluster_resolver.TFConfigClusterResolver()


def tpu_address(config: ml_collections.ConfigDict) -> str:
  """The TPU to connect to: config.tpu (--tpu), else $TPU_NAME, else 'local'.

  'local' is the TPU attached to this VM (a Cloud TPU VM, single host), as Model Garden resolves
  it; TPUClusterResolver(tpu=None) would instead ask for a name. A pod slice is driven by name
  (or grpc:// address), which the launcher passes.
  """
  return config.tpu or os.environ.get("TPU_NAME", "") or "local"


def _tpu_strategy(config):
  address = tpu_address(config)
  try:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
    # Only a remote TPU (a pod slice's name, a grpc:// address) is a cluster to connect to; the
    # local TPU runs in this process (Model Garden's tpu_initialize does the same).
    if address not in ("", "local"):
      tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
  except (ValueError, RuntimeError, tf.errors.OpError) as e:
    where = ("the local TPU of this VM (no --tpu, no $TPU_NAME)" if address == "local" else
             f"TPU {address!r} (from {'--tpu' if config.tpu else '$TPU_NAME'})")
    raise ConfigError(
        "strategy",
        f"'tpu' but no TPU is reachable: tried {where} and got: {first_line(e)}. On a Cloud TPU "
        "VM check that no other process holds the TPU (/tmp/libtpu_lockfile); for a pod slice or "
        "a remote TPU pass --tpu=NAME (or grpc://HOST:8470); elsewhere choose another "
        "--config.strategy.") from None
  return tf.distribute.TPUStrategy(resolver)


def local_paths_on_a_slice(config: ml_collections.ConfigDict, workdir: str, hosts: int):
  """The first path every host of a `hosts`-host TPU slice reads that is not gs://, or None.

  In TensorFlow's single-client model each TPU host runs its own share of the input pipeline, so
  a data_dir on the first host's disk is missing on all the others, and checkpoints need a place
  every host can write. Returns (flag, problem) for the user, or None.
  """
  if hosts <= 1:
    return None
  read = [("--workdir", workdir), ("--config.data_dir", config.data_dir)]
  if config.manual_dir:
    read.append(("--config.manual_dir", config.manual_dir))
  if config.get("cache_dir"):
    read.append(("--config.cache_dir", config.cache_dir))
  if config.dataset == "image_folder":
    read.append(("--config.image_folder", config.image_folder))
  if config.restore_from and not str(config.restore_from).isdigit():
    read.append(("--config.restore_from", config.restore_from))
  for flag, path in read:
    if not str(path).startswith("gs://"):
      what = repr(path) if path else "empty (TFDS' default folder on this host's disk)"
      return flag, (f"{flag} is {what}, but every host of this {hosts}-host TPU slice reads it; "
                    "use a gs:// path.")
  return None


def check_shared_paths(config: ml_collections.ConfigDict, strategy: tf.distribute.Strategy,
                       workdir: str) -> None:
  """Refuses, before anything is created, a local path that every host of a TPU slice reads.

  Raises:
    ConfigError: naming the field (WorkdirError for --workdir).
  """
  if not isinstance(strategy, tf.distribute.TPUStrategy):
    return
  problem = local_paths_on_a_slice(config, workdir, num_input_pipelines(strategy))
  if problem is None:
    return
  flag, message = problem
  if flag == "--workdir":
    raise WorkdirError(message)
  raise ConfigError(flag.split(".", 1)[1], message)


def _multi_worker_strategy(config):
  """MultiWorkerMirroredStrategy that gives up, naming the other workers, instead of hanging.

  The strategy's constructor waits until every worker has registered with the coordination
  service, by default for an hour, silently. The service is configured here as the strategy
  would configure it (it keeps a service it finds already set up), with config.cluster_wait_seconds
  as the register timeout. After the start, the service's heartbeats abort the collectives when a
  worker is lost, which train.py reports.
  """
  resolver = _cluster_resolver()
  spec = resolver.cluster_spec()
  if not spec.as_dict():
    logging.warning("strategy='multi_worker_mirrored' without TF_CONFIG: one worker.")
    return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
  # pylint: disable=g-import-not-at-top
  from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
  from tensorflow.python.distribute import multi_worker_util
  from tensorflow.python.eager import context
  # pylint: enable=g-import-not-at-top
  jobs = [coordination_config_pb2.CoordinatedJob(name=job, num_tasks=spec.num_tasks(job))
          for job in ("chief", "worker") if job in spec.jobs]
  context.context().configure_coordination_service(
      service_type="standalone", service_leader=multi_worker_util.coordination_leader(spec),
      coordinated_jobs=jobs, cluster_register_timeout_in_ms=int(config.cluster_wait_seconds * 1000))
  # Without the barrier the timeout only bounds each agent's own connection, and the leader
  # waits for the missing workers forever.
  context.context().coordination_service.cluster_register_with_barrier = True
  me = f"{resolver.task_type} {resolver.task_id}"
  addresses = {(job, i): address for job, tasks in spec.as_dict().items()
               for i, address in enumerate(tasks)}
  others = [f"{job} {i} at {address}" for (job, i), address in sorted(addresses.items())
            if (job, i) != (resolver.task_type, resolver.task_id)]
  logging.info("Worker %s: waiting up to %d s for %s.", me, config.cluster_wait_seconds,
               ", ".join(others))
  try:
    return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
  except (tf.errors.OpError, RuntimeError) as e:
    text = getattr(e, "message", "") or str(e)
    # TensorFlow lists the workers that never reached its start barrier after these words.
    names = r"/job:[\w-]+/replica:\d+/task:\d+"
    late = re.search(rf"timed out task names:((?:\s|\\n|,)*(?:{names}(?:\s|\\n|,)*)+)", text)
    late = late.group(1) if late else ""
    missing = sorted({(job, int(i)) for job, i in re.findall(r"/job:(\w+)/replica:\d+/task:(\d+)",
                                                             late)})
    who = ", ".join(f"{job} {i} at {addresses.get((job, i), '?')}" for job, i in missing)
    raise ConfigError(
        "cluster_wait_seconds",
        f"worker {me} waited {config.cluster_wait_seconds} s for the cluster in TF_CONFIG and "
        f"{'these workers did not come up: ' + who if who else 'it did not form: ' + ', '.join(others)}"
        ". Start every worker with the same TF_CONFIG cluster (launch/multiworker.py does), or "
        "wait longer with a larger value.") from None


def create_strategy(config: ml_collections.ConfigDict) -> tf.distribute.Strategy:
  """The strategy config.strategy names; call configure_host_devices first.

  Raises:
    ConfigError: the strategy has no devices to run on here.
  """
  name = resolve_strategy_name(config)
  if name == "tpu":
    return _tpu_strategy(config)
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "one_device":
    return tf.distribute.OneDeviceStrategy(_local_devices()[0].name)
  if name == "mirrored":
    return mirrored_strategy(config)
  if name == "multi_worker_mirrored":
    return _multi_worker_strategy(config)
  raise ConfigError("strategy", f"unknown strategy {name!r}.")


def num_input_pipelines(strategy: tf.distribute.Strategy) -> int:
  """One input pipeline per host, which is what distribute_datasets_from_function creates."""
  if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    spec = strategy.cluster_resolver.cluster_spec().as_dict()
    return max(1, sum(len(spec.get(kind, [])) for kind in ("chief", "worker")))
  if isinstance(strategy, tf.distribute.TPUStrategy):
    return strategy.extended.num_hosts
  return 1


def sum_over_workers(strategy: tf.distribute.Strategy, value: float) -> float:
  """Sums a host-side number over all workers (a barrier too: every worker must call it)."""
  fn = _SUM_FNS.get(id(strategy))
  if fn is None:
    fn = tf.function(lambda v: strategy.reduce(
        tf.distribute.ReduceOp.SUM, strategy.run(lambda: v / strategy.num_replicas_in_sync *
                                                 num_input_pipelines(strategy)), axis=None))
    _SUM_FNS[id(strategy)] = fn
  return float(fn(tf.constant(float(value))))


_SUM_FNS = {}


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """True on the one process that writes logs, summaries and committed checkpoints."""
  return bool(strategy.extended.should_checkpoint)


def check_batch(config: ml_collections.ConfigDict, strategy: tf.distribute.Strategy) -> None:
  """Refuses a global batch that does not split evenly over replicas."""
  replicas = strategy.num_replicas_in_sync
  for field in ("batch_size", "eval_batch_size"):
    value = config[field]
    if field == "eval_batch_size" and value <= 0:
      continue
    if value % replicas:
      raise ConfigError(
          field, f"{value} does not divide by the {replicas} replicas of this "
          f"{type(strategy).__name__}; use a multiple of {replicas}.")


def describe(config: ml_collections.ConfigDict, strategy: tf.distribute.Strategy) -> list:
  """Start-up lines: strategy, devices and the global, per-host and per-replica batch."""
  replicas = strategy.num_replicas_in_sync
  hosts = num_input_pipelines(strategy)
  try:
    devices = list(strategy.extended.worker_devices)
  except RuntimeError:  # The default strategy has no device list: TensorFlow places ops itself.
    devices = []
  return [
      f"Strategy {type(strategy).__name__} with {replicas} replica(s) on {hosts} host(s); "
      f"this host's devices: {', '.join(devices) or 'default placement'}.",
      f"Batch: global {config.batch_size}, per host {config.batch_size // hosts}, "
      f"per replica {config.batch_size // replicas}.",
  ]

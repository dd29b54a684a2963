"""The supervisor that runs training on a TPU worker, detached from the SSH session.

Runs on the workers (Python >= 3.8, standard library only); launch/remote_commands.py sends this
file's text in each remote command, so nothing needs to be installed there first. Usage:

  python remote_supervisor.py start  PAYLOAD   fork a supervisor in a new session (so it
      survives the SSH session) that runs payload["argv"] with payload["env"] in payload["cwd"],
      appends its output to <run_dir>/train.log and writes the exit status to
      <run_dir>/train.exit.
  python remote_supervisor.py status PAYLOAD   print RUNNING <pid> | EXITED <code> | LOST |
      NOT_STARTED.
  python remote_supervisor.py stop   PAYLOAD   SIGTERM the training process group, SIGKILL after
      payload["grace"] seconds.

PAYLOAD is base64 JSON, so no shell ever splits or expands the training argv.
"""
import base64, json, os, signal, socket, subprocess, sys, time


def paths(p):
  d = os.path.abspath(os.path.expanduser(p["run_dir"]))
  return (d, os.path.join(d, "train.pid"), os.path.join(d, "train.exit"),
          os.path.join(d, "train.log"))


def proc_identity(pid):
  # (state, start time) from /proc: a zombie is not running, and a pid file left over from before
  # a reboot may name an unrelated process that merely reuses the pid.
  try:
    with open("/proc/%d/stat" % pid) as f:
      fields = f.read().rsplit(")", 1)[1].split()
    return fields[0], fields[19]
  except (OSError, IndexError):
    return None


def alive_pid(pid_file):
  try:
    with open(pid_file) as f:
      words = f.read().split()
    pid = int(words[0])
    os.kill(pid, 0)
  except (OSError, ValueError, IndexError):
    return 0
  identity = proc_identity(pid)
  if identity is not None:
    state, started = identity
    if state == "Z" or (len(words) > 1 and words[1] != started):
      return 0
  return pid


def write_atomically(path, text):
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)


def supervise(p, exit_file):
  # stdout and stderr are already the log file; the child inherits them.
  env = dict(os.environ)
  env.update(p["env"])
  def note(msg):
    os.write(1, ("[vae_dist %s] %s\n" % (time.strftime("%Y-%m-%d %H:%M:%S"), msg)).encode())
  note("starting in %s: %s" % (p["cwd"], json.dumps(p["argv"])))
  try:
    child = subprocess.Popen(p["argv"], cwd=p["cwd"], env=env, stdin=subprocess.DEVNULL)
  except OSError as e:
    note("could not start: %s" % e)
    rc = 127
  else:
    def forward(signum, frame):
      child.send_signal(signum)
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    rc = child.wait()
    if rc < 0:
      rc = 128 - rc
  note("exited with status %d" % rc)
  write_atomically(exit_file, "%d\n" % rc)


def start(p):
  run_dir, pid_file, exit_file, log_file = paths(p)
  os.makedirs(run_dir, exist_ok=True)
  pid = alive_pid(pid_file)
  if pid:
    sys.stderr.write("vae_dist: training already runs on %s (pid %d); stop it first\n"
                     % (socket.gethostname(), pid))
    return 3
  for f in (pid_file, exit_file):
    if os.path.exists(f):
      os.remove(f)
  p["cwd"] = os.path.abspath(os.path.expanduser(p["cwd"]))
  sys.stdout.flush()
  sys.stderr.flush()
  pid = os.fork()
  if pid == 0:
    try:
      os.setsid()
      devnull = os.open(os.devnull, os.O_RDONLY)
      log = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
      os.dup2(devnull, 0)
      os.dup2(log, 1)
      os.dup2(log, 2)
      supervise(p, exit_file)
    finally:
      os._exit(0)
  identity = proc_identity(pid)
  write_atomically(pid_file, "%d %s\n" % (pid, identity[1] if identity else ""))
  print("vae_dist: training started on %s, pid %d, log %s" % (socket.gethostname(), pid, log_file))
  return 0


def status(p):
  _, pid_file, exit_file, _ = paths(p)
  if os.path.exists(exit_file):
    with open(exit_file) as f:
      print("EXITED %d" % int(f.read().strip()))
  elif alive_pid(pid_file):
    print("RUNNING %d" % alive_pid(pid_file))
  elif os.path.exists(pid_file):
    print("LOST")
  else:
    print("NOT_STARTED")
  return 0


def stop(p):
  _, pid_file, _, _ = paths(p)
  pid = alive_pid(pid_file)
  if not pid:
    print("vae_dist: no training process running on %s" % socket.gethostname())
    return 0
  os.killpg(pid, signal.SIGTERM)
  deadline = time.time() + p.get("grace", 30)
  while time.time() < deadline and alive_pid(pid_file):
    time.sleep(0.5)
  if alive_pid(pid_file):
    os.killpg(pid, signal.SIGKILL)
  print("vae_dist: stopped pid %d on %s" % (pid, socket.gethostname()))
  return 0


if __name__ == "__main__":
  sys.exit({"start": start, "status": status, "stop": stop}[sys.argv[1]](
      json.loads(base64.b64decode(sys.argv[2]).decode("utf-8"))))
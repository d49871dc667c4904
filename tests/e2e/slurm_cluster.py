"""A real single-node Slurm for the tests: munged with a generated key, slurmctld and slurmd
in the foreground (as root, SlurmUser=root), state, spool, logs and sockets in a temporary
folder, controller and node on free loopback ports. Debian's `slurm-wlm` and `munge`.

    with SlurmCluster() as cluster:
        env = {**os.environ, **cluster.env}   # SLURM_CONF: how the clients find it
        subprocess.run(["sbatch", ...], env=env)

Stopped by the daemons' own process ids (SIGTERM, then SIGKILL), never by name. Jobs still
in it are cancelled first. Call `available()` first: it says why a cluster cannot start here.
"""
import os
import shutil
import socket
import subprocess
import tempfile
import time

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "srun")


def find(program):
    return shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin:/usr/bin")


def available():
    """"" when a test cluster can start here, else the reason (for a skip message)."""
    missing = [p for p in DAEMONS if not find(p)]
    if missing:
        return "not installed: " + ", ".join(missing) + " (scripts/install-deps installs slurm-wlm and munge)"
    if os.geteuid() != 0:
        return "the test cluster runs slurmd as root (SlurmUser=root); run as root"
    return ""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CONF = """\
ClusterName=gwtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={dir}/munge.socket
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
KillWait={kill_wait}
MinJobAge=600
InactiveLimit=0
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


class SlurmCluster:
    def __init__(self, cpus=2, kill_wait=5):
        self.tmp = tempfile.TemporaryDirectory(prefix="gradwatch-slurm-")
        self.dir = self.tmp.name
        self.host = socket.gethostname().split(".")[0]
        self.conf = os.path.join(self.dir, "slurm.conf")
        self.env = {"SLURM_CONF": self.conf}
        self.procs = []
        for sub in ("state", "spool"):
            os.makedirs(os.path.join(self.dir, sub))
        with open(self.conf, "w") as f:
            f.write(CONF.format(host=self.host, dir=self.dir, ctld_port=free_port(), slurmd_port=free_port(),
                                cpus=cpus, kill_wait=kill_wait))
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _spawn(self, name, argv):
        log = open(os.path.join(self.dir, name + ".out"), "w")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env},
                             start_new_session=True)
        self.procs.append((name, p))
        return p

    def _start(self):
        key = os.path.join(self.dir, "munge.key")
        subprocess.run([find("mungekey"), "--create", "--keyfile", key], check=True, capture_output=True)
        os.chmod(key, 0o600)
        self._spawn("munged", [find("munged"), "--foreground", "--force", "--key-file", key,
                               "--socket", os.path.join(self.dir, "munge.socket"),
                               "--pid-file", os.path.join(self.dir, "munged.pid"),
                               "--log-file", os.path.join(self.dir, "munged.log"),
                               "--seed-file", os.path.join(self.dir, "munged.seed")])
        self._wait("munge's socket", lambda: os.path.exists(os.path.join(self.dir, "munge.socket")))
        self._spawn("slurmctld", [find("slurmctld"), "-D", "-i", "-f", self.conf])
        self._spawn("slurmd", [find("slurmd"), "-D", "-f", self.conf])
        self._wait("the node to be idle", lambda: self.node_state().startswith("IDLE"), timeout=60)

    def _wait(self, what, ready, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited ({p.returncode}) while waiting for {what}:\n" + self.logs())
            if ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f"the test Slurm: no {what} after {timeout} s:\n" + self.logs())

    def client(self, *args, check=True):
        """Runs a Slurm client (sinfo, squeue, scontrol ...) against this cluster."""
        return subprocess.run([find(args[0]), *args[1:]], capture_output=True, text=True, check=check,
                              env={**os.environ, **self.env}, timeout=60)

    def node_state(self):
        p = self.client("sinfo", "--noheader", "--Node", "--format=%T", check=False)
        return p.stdout.strip().upper() if p.returncode == 0 else ""

    def logs(self):
        out = []
        for name in ("munged.out", "slurmctld.out", "slurmd.out", "slurmctld.log", "slurmd.log"):
            path = os.path.join(self.dir, name)
            if os.path.exists(path):
                out.append(f"--- {name} ---\n" + open(path, errors="replace").read()[-4000:])
        return "\n".join(out)

    def stop(self):
        if any(name == "slurmctld" and p.poll() is None for name, p in self.procs):
            self.client("scancel", "--full", "--signal=KILL", "--user=root", check=False)
        for name, p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs = []
        self.tmp.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

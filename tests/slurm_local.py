#!/usr/bin/env python3
"""A private two-node SLURM on this machine, for the real-SLURM tests.

    python tests/slurm_local.py start|stop|status [--state_dir DIR]

`start` uses a live cluster when there is one (``sinfo`` answers with the caller's
environment: it is reported as external and left alone). Otherwise it installs the
Debian packages if missing (root only), creates the munge key, starts munged, writes
``DIR/slurm.conf`` (nodes n1 and n2 on 127.0.0.1, partitions ``debug`` and ``urgent``)
and starts slurmctld and two slurmd, then waits until both nodes are idle. Clients must
see ``SLURM_CONF=DIR/slurm.conf`` (``Cluster.env``). A second `start` returns at once.

`stop` cancels the jobs of the private cluster and ends only the daemons it started
(pid files in DIR), munged included only when `start` started it.

From Python::

    from slurm_local import start, stop, status
    cluster = start("/tmp/hpc_bert_slurm")   # -> Cluster
    subprocess.run(["sbatch", ...], env=cluster.env)
    stop(cluster)

No systemd is needed (see SLURM-NOTES.md); written for Debian 12's slurm 22.05.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_STATE_DIR = os.environ.get("HPC_BERT_SLURM_STATE_DIR", "/tmp/hpc_bert_slurm")
PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
NODES = ("n1", "n2")
PARTITIONS = ("debug", "short", "urgent")
CLUSTER_NAME = "hpcbert"
# Slots per node. The machine may have 2 cores: declaring more lets several small test
# jobs run side by side (slurmd accepts it because of SlurmdParameters=config_overrides).
MIN_CPUS_PER_NODE = 8
REAL_MEMORY_MB = 4000
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_RUN = Path("/run/munge")


class SlurmHarnessError(RuntimeError):
    """The private cluster could not be started or stopped; the message says why."""


@dataclasses.dataclass
class Cluster:
    """A usable SLURM cluster.

    conf: the slurm.conf clients must read (None for an external cluster that uses the
      system default). env: a full environment for subprocesses (os.environ at start
      time + SLURM_CONF). slurm_env: only the variables the harness adds.
    partitions: partition names, default partition first. nodes: node names.
    external: True when a cluster already answered and the harness touched nothing.
    started: True when this start() call launched at least one daemon.
    """

    conf: Path | None
    env: dict
    slurm_env: dict
    partitions: list
    nodes: list
    external: bool
    started: bool
    state_dir: Path | None
    bringup_s: float = 0.0

    @property
    def default_partition(self) -> str | None:
        return self.partitions[0] if self.partitions else None

    def environ(self, **extra) -> dict:
        """os.environ now, plus SLURM_CONF, plus `extra`."""
        env = dict(os.environ)
        env.update(self.slurm_env)
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def run(self, *args, check=True, timeout=60, **kw) -> subprocess.CompletedProcess:
        """Run a SLURM client (e.g. run("squeue", "-h")) against this cluster."""
        return subprocess.run(
            [str(a) for a in args], env=self.environ(), capture_output=True, text=True,
            check=check, timeout=timeout, **kw)


# ----------------------------------------------------------------------------- helpers

def _log(msg: str) -> None:
    print(f"[slurm_local] {msg}", file=sys.stderr, flush=True)


def _run(cmd, env=None, timeout=120, check=False) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=check, stdin=subprocess.DEVNULL)


def _paths(state_dir: Path) -> dict:
    return {
        "conf": state_dir / "slurm.conf",
        "ctld_state": state_dir / "ctld",
        "spool": state_dir / "spool",
        "run": state_dir / "run",
        "log": state_dir / "log",
        "ctld_pid": state_dir / "run" / "slurmctld.pid",
        "ctld_log": state_dir / "log" / "slurmctld.log",
        "munge_pid": state_dir / "run" / "munged.started-by-harness.pid",
        "lock": state_dir / "harness.lock",
    }


def _slurmd_pid(state_dir: Path, node: str) -> Path:
    return state_dir / "run" / f"slurmd-{node}.pid"


def _slurmd_log(state_dir: Path, node: str) -> Path:
    return state_dir / "log" / f"slurmd-{node}.log"


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int | None, must_contain: str) -> bool:
    """pid runs and its command line contains `must_contain` (guards against pid reuse)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    # a zombie has an empty cmdline
    return must_contain in _cmdline(pid)


def _tail(path: Path, n: int = 25) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"  ({path}: no log)"
    return "\n".join(f"  {line}" for line in lines[-n:]) or f"  ({path}: empty)"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _ports() -> tuple[int, list[int]]:
    base = int(os.environ.get("HPC_BERT_SLURM_PORT", "6817"))
    return base, [base + 1 + i for i in range(len(NODES))]


# ------------------------------------------------------------------- external cluster

def _external_cluster() -> Cluster | None:
    """A cluster the caller's environment already reaches, or None."""
    if not shutil.which("sbatch") or not shutil.which("sinfo"):
        return None
    conf = os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")
    # Without a config file (and no configless setup) sinfo fails fast; with one that
    # points to a dead controller it retries for MessageTimeout: keep that bounded.
    try:
        r = _run(["sinfo", "-h", "-o", "%R|%N"], timeout=30)
    except subprocess.TimeoutExpired:
        return None
    if r.returncode != 0:
        return None
    parts, nodes = [], []
    try:
        d = _run(["scontrol", "show", "partition", "-o"], timeout=30)
        for line in d.stdout.splitlines():
            m = re.search(r"PartitionName=(\S+)", line)
            if m:
                (parts.insert(0, m.group(1)) if "Default=YES" in line
                 else parts.append(m.group(1)))
    except subprocess.TimeoutExpired:
        pass
    n = _run(["sinfo", "-h", "-N", "-o", "%N"], timeout=30)
    for line in n.stdout.split():
        if line not in nodes:
            nodes.append(line)
    return Cluster(conf=Path(conf) if os.path.exists(conf) else None, env=dict(os.environ),
                   slurm_env={}, partitions=parts, nodes=nodes, external=True,
                   started=False, state_dir=None)


# -------------------------------------------------------------------------- packages

def _pkg_installed(pkg: str) -> bool:
    r = _run(["dpkg-query", "-W", "-f=${Status}", pkg], timeout=30)
    return r.returncode == 0 and "install ok installed" in r.stdout


def ensure_packages() -> bool:
    """Install the Debian packages if missing. Returns True when it installed some."""
    missing = [p for p in PACKAGES if not _pkg_installed(p)]
    if not missing and shutil.which("slurmctld") and shutil.which("slurmd"):
        return False
    if os.geteuid() != 0:
        raise SlurmHarnessError(
            f"SLURM packages missing ({' '.join(missing)}) and not root: run as root or "
            f"`sudo apt-get install -y --no-install-recommends {' '.join(PACKAGES)}`")
    if not shutil.which("apt-get"):
        raise SlurmHarnessError(
            f"SLURM packages missing ({' '.join(missing)}) and no apt-get here: install "
            "slurmctld, slurmd, the SLURM clients and munge by hand")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
    _log(f"installing {' '.join(missing)}")
    r = _run(cmd, env=env, timeout=900)
    if r.returncode != 0:
        _log("apt-get install failed; running apt-get update and retrying")
        u = _run(["apt-get", "update"], env=env, timeout=900)
        r = _run(cmd, env=env, timeout=900)
        if r.returncode != 0:
            raise SlurmHarnessError(
                "apt-get install of the SLURM packages failed:\n"
                + "\n".join((u.stdout + u.stderr + r.stdout + r.stderr).splitlines()[-15:]))
    return True


# ----------------------------------------------------------------------------- munge

def _munge_ok() -> bool:
    if not shutil.which("munge") or not shutil.which("unmunge"):
        return False
    try:
        m = subprocess.run(["munge", "-n"], capture_output=True, timeout=10)
        if m.returncode != 0:
            return False
        u = subprocess.run(["unmunge"], input=m.stdout, capture_output=True, timeout=10)
        return u.returncode == 0
    except subprocess.TimeoutExpired:
        return False


def ensure_munge(state_dir: Path) -> bool:
    """munged running with a key. Returns True when this call started it."""
    if _munge_ok():
        return False
    if os.geteuid() != 0:
        raise SlurmHarnessError("munged is not running and not root: start munged "
                                "(`sudo runuser -u munge -- /usr/sbin/munged`)")
    import pwd
    try:
        pw = pwd.getpwnam("munge")
    except KeyError:
        raise SlurmHarnessError("user `munge` missing: is the munge package installed?")
    if not MUNGE_KEY.exists():
        MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
        if shutil.which("mungekey"):
            _run(["mungekey", "--create", "--keyfile", str(MUNGE_KEY)], check=True)
        else:
            MUNGE_KEY.write_bytes(os.urandom(1024))
    os.chown(MUNGE_KEY, pw.pw_uid, pw.pw_gid)
    os.chmod(MUNGE_KEY, 0o600)
    for d in (MUNGE_RUN, Path("/var/lib/munge"), Path("/var/log/munge")):
        d.mkdir(parents=True, exist_ok=True)
        os.chown(d, pw.pw_uid, pw.pw_gid)
    os.chmod(MUNGE_RUN, 0o755)
    munged = shutil.which("munged") or "/usr/sbin/munged"
    errs = ""
    for extra in ([], ["--force"]):  # --force: stale socket left by a killed munged
        r = _run(["runuser", "-u", "munge", "--", munged, *extra], timeout=30)
        errs += r.stdout + r.stderr
        for _ in range(50):
            if _munge_ok():
                break
            time.sleep(0.1)
        if _munge_ok():
            pid = _read_pid(MUNGE_RUN / "munged.pid")
            if pid:
                _paths(state_dir)["munge_pid"].write_text(f"{pid}\n")
            return True
    raise SlurmHarnessError(f"munged did not start (`munge -n | unmunge` fails): {errs.strip()}"
                            "\n" + _tail(Path("/var/log/munge/munged.log")))


# ------------------------------------------------------------------------ slurm.conf

def _node_cpus() -> int:
    cpus = os.cpu_count() or 1
    try:
        r = _run(["slurmd", "-C"], timeout=30)
        m = re.search(r"\bCPUs=(\d+)", r.stdout)
        if m:
            cpus = int(m.group(1))
    except (OSError, subprocess.TimeoutExpired):
        pass
    return max(cpus, MIN_CPUS_PER_NODE)


def _free_mb() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return REAL_MEMORY_MB


def render_conf(state_dir: Path, cpus: int, mem_mb: int) -> str:
    p = _paths(state_dir)
    ctld_port, node_ports = _ports()
    nodes = ",".join(NODES)
    node_lines = "\n".join(
        f"NodeName={n} NodeAddr=127.0.0.1 Port={port} CPUs={cpus} "
        f"RealMemory={mem_mb} State=UNKNOWN"
        for n, port in zip(NODES, node_ports))
    return f"""\
# Written by tests/slurm_local.py: a private two-node SLURM on one host for tests.
ClusterName={CLUSTER_NAME}
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# without it a requeued job waits 120 s (Reason=BeginTime) before it may start again
AuthInfo=cred_expire=10
MpiDefault=none
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# nodes declare more CPUs than the machine has; slurmd must trust slurm.conf
SlurmdParameters=config_overrides
PropagateResourceLimits=NONE
JobRequeue=1
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
ReturnToService=2
MinJobAge=30
KillWait=5
OverTimeLimit=0
InactiveLimit=0
Waittime=0
MessageTimeout=10
SlurmdTimeout=60
SlurmctldTimeout=60
StateSaveLocation={p['ctld_state']}
SlurmdSpoolDir={p['spool']}/%n
SlurmctldPidFile={p['ctld_pid']}
SlurmdPidFile={p['run']}/slurmd-%n.pid
SlurmctldLogFile={p['ctld_log']}
SlurmdLogFile={p['log']}/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
{node_lines}
PartitionName=debug Nodes={nodes} Default=YES PriorityTier=1 MaxTime=INFINITE OverSubscribe=NO GraceTime=20 State=UP
PartitionName=short Nodes={nodes} Default=NO PriorityTier=1 MaxTime=00:02:00 OverSubscribe=NO State=UP
PartitionName=urgent Nodes={nodes} Default=NO PriorityTier=2 PreemptMode=OFF MaxTime=INFINITE OverSubscribe=NO State=UP
"""


# ---------------------------------------------------------------------------- status

def _daemon_pids(state_dir: Path) -> dict:
    p = _paths(state_dir)
    conf = str(p["conf"])
    out = {"slurmctld": _read_pid(p["ctld_pid"])}
    out["slurmctld"] = out["slurmctld"] if _alive(out["slurmctld"], conf) else None
    for n in NODES:
        pid = _read_pid(_slurmd_pid(state_dir, n))
        out[f"slurmd-{n}"] = pid if _alive(pid, conf) else None
    pid = _read_pid(p["munge_pid"])
    out["munged(started by harness)"] = pid if _alive(pid, "munged") else None
    return out


def _node_states(env: dict) -> dict:
    try:
        r = _run(["sinfo", "-h", "-N", "-o", "%N %T"], env=env, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if r.returncode != 0:
        return {}
    states = {}
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1].lower()
    return states


def _private_env(state_dir: Path) -> dict:
    return {"SLURM_CONF": str(_paths(state_dir)["conf"])}


def _private_cluster(state_dir: Path, started: bool, t0: float) -> Cluster:
    slurm_env = _private_env(state_dir)
    return Cluster(conf=_paths(state_dir)["conf"], env=dict(os.environ, **slurm_env),
                   slurm_env=slurm_env, partitions=list(PARTITIONS), nodes=list(NODES),
                   external=False, started=started, state_dir=state_dir,
                   bringup_s=time.monotonic() - t0)


def status(state_dir: str | os.PathLike = DEFAULT_STATE_DIR) -> dict:
    """Daemon pids (None when not running) and node states of the private cluster."""
    state_dir = Path(state_dir).resolve()
    pids = _daemon_pids(state_dir)
    nodes = _node_states(dict(os.environ, **_private_env(state_dir))) \
        if pids["slurmctld"] else {}
    ext = None
    if not pids["slurmctld"] and "SLURM_CONF" not in os.environ:
        ext = _external_cluster()
    running = bool(pids["slurmctld"]) and all(pids[f"slurmd-{n}"] for n in NODES)
    return {"state_dir": str(state_dir), "running": running, "pids": pids,
            "nodes": nodes, "conf": str(_paths(state_dir)["conf"]),
            "external": ext is not None,
            "external_partitions": ext.partitions if ext else None}


# ----------------------------------------------------------------------------- start

def _slurmd_start_times(env: dict) -> dict:
    """SlurmdStartTime (epoch s) per node: when its slurmd last registered."""
    try:
        r = _run(["scontrol", "show", "node", "-o"], env=env, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    out = {}
    for line in r.stdout.splitlines():
        name = re.search(r"NodeName=(\S+)", line)
        t = re.search(r"SlurmdStartTime=(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)", line)
        if name and t:
            out[name.group(1)] = time.mktime(time.strptime(t.group(1), "%Y-%m-%dT%H:%M:%S"))
    return out


def _wait_idle(state_dir: Path, env: dict, timeout: float,
               registered_after: dict | None = None) -> None:
    """Wait until every node is usable. registered_after {node: epoch}: a node whose
    slurmd was just started must also have registered since then (slurmctld restores
    the last node state, IDLE, from its state files before any slurmd has answered)."""
    registered_after = registered_after or {}
    deadline = time.monotonic() + timeout
    states = {}
    while time.monotonic() < deadline:
        states = _node_states(env)
        if all(states.get(n, "").rstrip("*") in ("idle", "mixed", "allocated")
               for n in NODES):
            if not registered_after:
                return
            started = _slurmd_start_times(env)
            if all(started.get(n, 0) >= t for n, t in registered_after.items()):
                return
        pids = _daemon_pids(state_dir)
        dead = [k for k in ("slurmctld", *(f"slurmd-{n}" for n in NODES)) if not pids[k]]
        if dead and time.monotonic() > deadline - timeout + 5:
            break
        time.sleep(0.2)
    p = _paths(state_dir)
    pids = _daemon_pids(state_dir)
    msg = [f"SLURM nodes not idle after {timeout:.0f} s: states={states or 'no answer'} "
           f"pids={pids}", f"slurmctld log {p['ctld_log']}:", _tail(p["ctld_log"])]
    for n in NODES:
        msg += [f"slurmd {n} log {_slurmd_log(state_dir, n)}:",
                _tail(_slurmd_log(state_dir, n))]
    raise SlurmHarnessError("\n".join(msg))


def _spawn(cmd: list, log: Path) -> None:
    """Start a daemon that forks itself; its pid file tells us the daemon's pid."""
    with open(log.with_suffix(".stderr"), "ab") as err:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                           start_new_session=True, timeout=60)
    if r.returncode != 0:
        raise SlurmHarnessError(
            f"`{' '.join(cmd)}` exited {r.returncode}:\n{_tail(log.with_suffix('.stderr'))}"
            f"\n{_tail(log)}")


def _wait_pid(pidfile: Path, conf: str, what: str, log: Path, timeout=20.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = _read_pid(pidfile)
        if _alive(pid, conf):
            return pid
        time.sleep(0.05)
    raise SlurmHarnessError(f"{what} did not start (no live pid in {pidfile}):\n"
                            f"{_tail(log.with_suffix('.stderr'))}\n{_tail(log)}")


def start(state_dir: str | os.PathLike = DEFAULT_STATE_DIR, timeout: float = 90.0,
          use_external: bool = True) -> Cluster:
    """A running cluster: an external one if reachable, else the private one in state_dir.

    Idempotent and safe to call from concurrent processes (file lock in state_dir).
    Raises SlurmHarnessError with the logs' tail when the private cluster cannot start.
    """
    t0 = time.monotonic()
    state_dir = Path(state_dir).resolve()
    p = _paths(state_dir)
    conf = str(p["conf"])
    own_conf = os.environ.get("SLURM_CONF")
    own_conf = own_conf and Path(own_conf).resolve() == p["conf"]
    with _locked(p["lock"]):
        pids = _daemon_pids(state_dir)
        if pids["slurmctld"] and all(pids[f"slurmd-{n}"] for n in NODES) and _munge_ok():
            env = dict(os.environ, **_private_env(state_dir))
            _wait_idle(state_dir, env, timeout)
            return _private_cluster(state_dir, False, t0)
        if use_external and not pids["slurmctld"] and not own_conf:
            ext = _external_cluster()
            if ext is not None:
                ext.bringup_s = time.monotonic() - t0
                return ext

        ensure_packages()
        for d in (state_dir, p["ctld_state"], p["run"], p["log"],
                  *(p["spool"] / n for n in NODES)):
            d.mkdir(parents=True, exist_ok=True)
        ensure_munge(state_dir)
        env = dict(os.environ, **_private_env(state_dir))

        if not pids["slurmctld"]:
            ctld_port, node_ports = _ports()
            busy = [port for port in (ctld_port, *node_ports) if not _port_free(port)]
            if busy:
                raise SlurmHarnessError(
                    f"TCP port(s) {busy} already in use (another slurmctld/slurmd?). Stop "
                    "it, or pick other ports with HPC_BERT_SLURM_PORT=<base> (uses base.."
                    "base+2).")
            text = render_conf(state_dir, _node_cpus(),
                               max(500, min(REAL_MEMORY_MB, _free_mb() - 500)))
            tmp = p["conf"].with_suffix(".tmp")
            tmp.write_text(text)
            os.replace(tmp, p["conf"])
            # old slurmd must not talk to a new slurmctld with another config
            for n in NODES:
                if pids[f"slurmd-{n}"]:
                    _kill(pids[f"slurmd-{n}"], conf)
                    pids[f"slurmd-{n}"] = None
            _spawn(["slurmctld", "-f", conf], p["ctld_log"])
            _wait_pid(p["ctld_pid"], conf, "slurmctld", p["ctld_log"])
            # Jobs recovered from an earlier run (crash, reboot) must not start again:
            # no slurmd is up yet, so nothing can run; cancel them now.
            _cancel_all(env, wait=0)
        spawned = {}
        for n in NODES:
            if not pids[f"slurmd-{n}"]:
                log = _slurmd_log(state_dir, n)
                spawned[n] = int(time.time()) - 1  # SlurmdStartTime has 1 s resolution
                _spawn(["slurmd", "-N", n, "-f", conf], log)
                _wait_pid(_slurmd_pid(state_dir, n), conf, f"slurmd {n}", log)
        _wait_idle(state_dir, env, timeout, registered_after=spawned)
        return _private_cluster(state_dir, True, t0)


# ------------------------------------------------------------------------------ stop

def _cancel_all(env: dict, wait: float) -> None:
    try:
        r = _run(["squeue", "-h", "-o", "%i"], env=env, timeout=30)
    except subprocess.TimeoutExpired:
        return
    ids = sorted({i.split("_")[0] for i in r.stdout.split()})
    if r.returncode != 0 or not ids:
        return
    _run(["scancel", *ids], env=env, timeout=30)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        r = _run(["squeue", "-h", "-o", "%i"], env=env, timeout=30)
        if r.returncode != 0 or not r.stdout.strip():
            return
        time.sleep(0.5)


def _kill(pid: int, must_contain: str, timeout: float = 15.0) -> None:
    if not _alive(pid, must_contain):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid, must_contain):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def stop(cluster: Cluster | str | os.PathLike | None = None) -> list:
    """Stop the private cluster (a Cluster from start(), or its state dir).

    An external cluster is left alone. Cancels the private cluster's jobs, then ends the
    slurmd/slurmctld pids recorded in the state dir, and munged if start() started it.
    Returns the names of the daemons it stopped.
    """
    if isinstance(cluster, Cluster):
        if cluster.external:
            return []
        state_dir = cluster.state_dir
    else:
        state_dir = cluster if cluster is not None else DEFAULT_STATE_DIR
    state_dir = Path(state_dir).resolve()
    p = _paths(state_dir)
    conf = str(p["conf"])
    stopped = []
    with _locked(p["lock"]):
        pids = _daemon_pids(state_dir)
        if pids["slurmctld"] and any(pids[f"slurmd-{n}"] for n in NODES):
            _cancel_all(dict(os.environ, **_private_env(state_dir)), wait=15)
        for n in NODES:
            if pids[f"slurmd-{n}"]:
                _kill(pids[f"slurmd-{n}"], conf)
                stopped.append(f"slurmd-{n}")
        if pids["slurmctld"]:
            _kill(pids["slurmctld"], conf)
            stopped.append("slurmctld")
        mpid = pids["munged(started by harness)"]
        if mpid:
            _kill(mpid, "munged")
            stopped.append("munged")
        with contextlib.suppress(FileNotFoundError):
            p["munge_pid"].unlink()
    return stopped


# ------------------------------------------------------------------------------- CLI

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=["start", "stop", "status"])
    ap.add_argument("--state_dir", default=DEFAULT_STATE_DIR,
                    help=f"where slurm.conf, pids, logs and state live "
                         f"(default {DEFAULT_STATE_DIR})")
    ap.add_argument("--timeout", type=float, default=90.0,
                    help="seconds to wait for the nodes to be idle (start)")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    args = ap.parse_args(argv)
    try:
        if args.action == "start":
            c = start(args.state_dir, timeout=args.timeout)
            info = {"external": c.external, "started": c.started,
                    "conf": str(c.conf) if c.conf else None, "partitions": c.partitions,
                    "nodes": c.nodes, "bringup_s": round(c.bringup_s, 2)}
            if args.json:
                print(json.dumps(info))
            elif c.external:
                print(f"external SLURM cluster in use (partitions {c.partitions}); "
                      "nothing started")
            else:
                print(f"{'started' if c.started else 'already running'} in "
                      f"{c.bringup_s:.1f} s; partitions {c.partitions}, nodes {c.nodes}\n"
                      f"export SLURM_CONF={c.conf}")
            return 0
        if args.action == "stop":
            stopped = stop(args.state_dir)
            print(json.dumps({"stopped": stopped}) if args.json else
                  ("stopped " + ", ".join(stopped) if stopped else "nothing to stop"))
            return 0
        st = status(args.state_dir)
        if args.json:
            print(json.dumps(st))
        else:
            if st["running"]:
                print(f"running: conf {st['conf']}\nnodes {st['nodes']}\npids {st['pids']}"
                      f"\nexport SLURM_CONF={st['conf']}")
            elif st["external"]:
                print(f"private cluster not running; an external cluster answers "
                      f"(partitions {st['external_partitions']})")
            elif any(st["pids"].values()):
                print(f"partly running (pids {st['pids']}): `start` completes it, "
                      "`stop` ends it")
            else:
                print("not running")
        return 0 if st["running"] or st["external"] else 3
    except SlurmHarnessError as e:
        print(f"slurm_local: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

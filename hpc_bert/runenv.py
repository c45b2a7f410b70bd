"""The run environment: SLURM / torchrun / submitit variables turned into neutral facts.

Owns the job id, the restart count, the hosts, the rank layout with the master address and
port (the one MASTER_PORT formula), and the allocation deadline (``HPC_BERT_ALLOCATION_END``,
unix seconds, exported by the launcher). The ledger, the run lock, the trainer and the
launcher's jobs read these here; no other module reads a scheduler variable. Standard
library only, so it is cheap to import and to run from a batch script:

    eval "$(python -m hpc_bert.runenv exports)"   # MASTER_ADDR, MASTER_PORT, HPC_BERT_ALLOCATION_END
    python -m hpc_bert.runenv port                # this job's MASTER_PORT
"""
from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Mapping

DEADLINE_ENV = "HPC_BERT_ALLOCATION_END"
GRACE_ENV = "HPC_BERT_PREEMPT_GRACE_S"  # seconds between a preemption's SIGTERM and its SIGKILL
DEFAULT_PORT = 29500  # torch.distributed's usual port, when no job id spreads jobs apart
PORT_BASE, PORT_SPAN = 20000, 20000  # a job's port: one per job id, away from ephemeral ports


@dataclass
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int


def master_port(job_id: str | int | None) -> int:
    """The rendezvous port of a job: a function of its job id, so that every rank of the job
    computes the same one and jobs sharing a node differ. The tasks of a job array (``A_i``) are
    separate allocations that may share a node: each gets its own, from A + i (SLURM numbers
    array tasks from A on)."""
    head, _, task = str(job_id or "").partition("_")
    if not head.isdigit():
        return DEFAULT_PORT
    return PORT_BASE + (int(head) + (int(task) if task.isdigit() else 0)) % PORT_SPAN


def _scontrol(*args: str) -> str:
    try:
        return subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=30,
                              check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def expand_hosts(nodelist: str) -> list[str]:
    """SLURM's compressed node list (``n[1-3]``) as host names; a best guess without scontrol."""
    hosts = _scontrol("show", "hostnames", nodelist).split() if nodelist else []
    return hosts or [nodelist.split(",")[0].split("[")[0] or "127.0.0.1"]


def resolve_host(host: str) -> str:
    """An address for ``host``: DNS, else SLURM's NodeAddr (test clusters name nodes n1, n2)."""
    try:
        socket.gethostbyname(host)
        return host
    except OSError:
        pass
    for item in _scontrol("show", "node", host, "-o").split():
        if item.startswith("NodeAddr="):
            return item.split("=", 1)[1]
    return host


def job_id(env: Mapping[str, str] = os.environ) -> str | None:
    """The scheduler's id of this job: SLURM's, ``local-<pid>`` under submitit's LocalExecutor,
    None when started by hand."""
    if env.get("SLURM_JOB_ID"):
        return env["SLURM_JOB_ID"]
    if env.get("SUBMITIT_LOCAL_JOB_ID"):
        return f"local-{env['SUBMITIT_LOCAL_JOB_ID']}"
    return None


def restart_count(env: Mapping[str, str] = os.environ) -> int | None:
    """How often SLURM requeued this job (0 before the first requeue); None when the scheduler
    does not count (the ledger then counts the run's earlier allocations)."""
    if env.get("SLURM_JOB_ID"):
        return int(env.get("SLURM_RESTART_COUNT") or 0)
    return None


def hosts(env: Mapping[str, str] = os.environ) -> list[str]:
    """The allocation's hosts (this host outside SLURM)."""
    nodelist = env.get("SLURM_JOB_NODELIST", "")
    return expand_hosts(nodelist) if nodelist else [socket.gethostname()]


def dist_env(env: Mapping[str, str] = os.environ) -> DistEnv:
    """This process's rank layout: torch.distributed's variables (torchrun, or exported by the
    launcher), else SLURM's (one srun task per GPU), else a single process."""
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)),
                       env.get("MASTER_ADDR", "127.0.0.1"), int(env.get("MASTER_PORT", DEFAULT_PORT)))
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env and "SLURM_STEP_ID" in env:
        nodelist = env.get("SLURM_STEP_NODELIST", env.get("SLURM_JOB_NODELIST", "127.0.0.1"))
        return DistEnv(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)),
                       env.get("MASTER_ADDR") or expand_hosts(nodelist)[0],
                       int(env.get("MASTER_PORT") or master_port(env.get("SLURM_JOB_ID"))))
    return DistEnv(0, 1, 0, "127.0.0.1", int(env.get("MASTER_PORT", DEFAULT_PORT)))


def allocation_end(env: Mapping[str, str] = os.environ) -> float | None:
    """Unix time at which the allocation ends, as the launcher exported it (None: unknown)."""
    raw = env.get(DEADLINE_ENV, "").strip()
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


def preempt_grace_s(env: Mapping[str, str] = os.environ) -> float | None:
    """Seconds a preempted job has between SIGTERM and SIGKILL (the partition's GraceTime), as the
    launcher exported it; None when unknown."""
    try:
        grace = float(env.get(GRACE_ENV, "") or "nan")
    except ValueError:
        return None
    return grace if grace > 0 else None


def slurm_end_time(slurm_job_id: str) -> float | None:
    """Unix time at which SLURM will end this allocation (its EndTime), if it says."""
    try:
        out = subprocess.run(["squeue", "-h", "-j", str(slurm_job_id), "-o", "%e"],
                             capture_output=True, text=True, timeout=30).stdout.strip().splitlines()
        if out and out[0] not in ("N/A", "Unknown", "NONE"):
            return time.mktime(time.strptime(out[0], "%Y-%m-%dT%H:%M:%S"))
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    return None


def local_end_time(env: Mapping[str, str] = os.environ) -> float | None:
    """Unix time at which submitit's LocalExecutor ends this (re)start: its emulated time limit."""
    timeout_s = float(env.get("SUBMITIT_LOCAL_TIMEOUT_S", "0") or 0)
    return time.time() + timeout_s if timeout_s else None


def exports(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """What a SLURM batch script exports to its srun tasks: master address and port, deadline.

    Always the job's own: sbatch copies the submitting shell's environment into the job, and a
    MASTER_PORT left there (another job's, a test's) would collide on a shared node."""
    jid = env.get("SLURM_JOB_ID", "")
    out = {"MASTER_ADDR": expand_hosts(env.get("SLURM_JOB_NODELIST", ""))[0],
           "MASTER_PORT": str(master_port(jid))}
    end = slurm_end_time(jid) if jid else None
    out[DEADLINE_ENV] = f"{end:.0f}" if end else ""
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["port"]:
        print(master_port(os.environ.get("SLURM_JOB_ID")))
    elif argv == ["exports"]:
        print("\n".join(f"export {k}={shlex.quote(v)}" for k, v in exports().items()))
    else:
        print("usage: python -m hpc_bert.runenv {port,exports}\n\n"
              "  port     this SLURM job's MASTER_PORT (the formula every launcher uses)\n"
              "  exports  export lines for MASTER_ADDR, MASTER_PORT and " + DEADLINE_ENV,
              file=sys.stdout if argv in (["-h"], ["--help"]) else sys.stderr)
        return 0 if argv in (["-h"], ["--help"]) else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

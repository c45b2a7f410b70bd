"""Where the chain's jobs stand in the SLURM queue: the chain record and the job states.

``submit`` records the job ids of the chain in RUN_DIR/chain.json (layout.CHAIN_FILE);
``status`` and ``submit --cancel`` read it. States come from ``scontrol show job`` (works
without accounting, but forgets a job MinJobAge seconds after it ended) and from ``sacct``
where accounting answers. A job that neither knows any more is reported as gone; status then
reads the run dir for what it did.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field

from hpc_bert.atomic import read_json, write_json_atomic
from hpc_bert.layout import CHAIN_FILE, GLUE_DIR, GLUE_RESULTS
from hpc_bert.pretrain.clock import Ledger

ROLES = ("pretrain", "glue_array", "glue_round2", "aggregate")  # glue_round2: start_from tasks
DONE_STATES = {"COMPLETED"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT"}
PENDING_STATES = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "RESIZING"}
CANCELLED_STATES = {"CANCELLED"}  # by scancel or submit --cancel: stopped on purpose, not failed
# everything else (FAILED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, PREEMPTED, DEADLINE, BOOT_FAIL) failed


def slurm_available() -> bool:
    if not shutil.which("sbatch"):
        return False
    return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode == 0


def partition_grace_s(partition: str | None) -> float | None:
    """Seconds a preempted job of the partition (default: the default one) gets between SIGTERM and
    SIGKILL: its GraceTime; None when its jobs are not preempted or SLURM does not say."""
    for line in (_run(["scontrol", "show", "partition", "-o"] + ([partition] if partition else [])) or "").splitlines():
        fields = dict(m.groups() for m in re.finditer(r"(\w+)=(\S*)", line))
        if partition or fields.get("Default") == "YES":
            if fields.get("PreemptMode", "OFF").upper().startswith("OFF"):
                return None
            grace = fields.get("GraceTime", "")
            return float(grace) if grace.isdigit() and int(grace) > 0 else None  # 0: SIGKILL after KillWait
    return None


def record_chain(run_dir: str, cluster: str, jobs: dict[str, str], glue_tasks: int, logs: str,
                 allocation_hours: float, glue_round2_tasks: int = 0) -> dict:
    """Write the chain's job ids (role -> id) for status and --cancel; returns the record."""
    record = {"cluster": cluster, "submitted": time.time(), "jobs": dict(jobs), "glue_tasks": glue_tasks,
              "glue_round2_tasks": glue_round2_tasks, "logs": logs, "allocation_hours": allocation_hours}
    write_json_atomic(os.path.join(run_dir, CHAIN_FILE), record)
    return record


def read_chain(run_dir: str) -> dict | None:
    return read_json(os.path.join(run_dir, CHAIN_FILE))


@dataclass
class JobState:
    """One job (or one array) as the scheduler sees it now."""
    job_id: str
    state: str                      # PENDING / RUNNING / COMPLETED / FAILED ... ; GONE: the scheduler forgot it
    reason: str = ""                # why it pends (Priority, Resources, Dependency, BeginTime ...)
    nodes: str = ""
    restarts: int = 0
    exit_code: str = ""
    tasks: dict[str, int] = field(default_factory=dict)  # array: done / running / pending / failed counts

    @property
    def failed(self) -> bool:
        return self.state not in DONE_STATES | RUNNING_STATES | PENDING_STATES | CANCELLED_STATES | {"GONE"}


def _run(cmd: list[str]) -> str | None:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout if r.returncode == 0 else None


def _count_range(spec: str) -> int:
    """Tasks in an ArrayTaskId such as ``3``, ``2-5``, ``1,4-7%16``."""
    spec = spec.split("%")[0]
    n = 0
    for part in filter(None, spec.split(",")):
        lo, _, hi = part.partition("-")
        n += int(hi) - int(lo) + 1 if hi else 1
    return n


def classify(state: str) -> str:
    if state in DONE_STATES:
        return "done"
    if state in RUNNING_STATES:
        return "running"
    if state in PENDING_STATES:
        return "pending"
    if state in CANCELLED_STATES:
        return "cancelled"
    return "failed"


def scontrol_records(job_id: str) -> list[dict]:
    """``scontrol show job -o`` lines as dicts (an array gives one line per task or task range)."""
    out = _run(["scontrol", "show", "job", "-o", job_id]) or ""
    return [dict(m.groups() for m in re.finditer(r"(\w+)=(\S*)", line)) for line in out.splitlines() if line.strip()]


def sacct_records(job_id: str) -> list[dict]:
    """``sacct`` rows for the job (allocations only); empty without accounting."""
    out = _run(["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "JobID,State,Reason,NodeList,ExitCode"])
    rows = []
    for line in (out or "").splitlines():
        parts = line.split("|")
        if len(parts) == 5:
            rows.append({"JobId": parts[0], "JobState": parts[1].split()[0], "Reason": parts[2],
                         "NodeList": parts[3], "ExitCode": parts[4], "ArrayTaskId": parts[0].partition("_")[2]})
    return rows


def job_state(job_id: str, array_size: int | None = None) -> JobState:
    """The job's state; for an array (``array_size`` tasks), task counts, where tasks the scheduler
    already forgot count as ``gone``."""
    records = scontrol_records(job_id) or sacct_records(job_id)
    if not records:
        return JobState(job_id, "GONE")
    if array_size is None:
        r = records[0]
        return JobState(job_id, r.get("JobState", "UNKNOWN"), r.get("Reason", ""), _nodes(r),
                        int(r.get("Restarts", 0) or 0), r.get("ExitCode", ""))
    tasks = {"done": 0, "running": 0, "pending": 0, "failed": 0, "cancelled": 0}
    nodes, reasons = set(), set()
    for r in records:
        kind = classify(r.get("JobState", ""))
        tasks[kind] += _count_range(r.get("ArrayTaskId") or "0")
        if kind == "running" and _nodes(r):
            nodes.add(_nodes(r))
        if kind == "pending" and r.get("Reason") not in (None, "", "None"):
            reasons.add(r["Reason"])
    known = sum(tasks.values())
    if not tasks["cancelled"]:
        del tasks["cancelled"]  # the usual case: the line lists what can happen without a cancel
    if known < array_size:
        tasks["gone"] = array_size - known
    summary = ("RUNNING" if tasks["running"] else "PENDING" if tasks["pending"]
               else "FAILED" if tasks["failed"] else "CANCELLED" if tasks.get("cancelled") else "COMPLETED")
    return JobState(job_id, summary, ",".join(sorted(reasons)), ",".join(sorted(nodes)), tasks=tasks)


def _nodes(r: dict) -> str:
    nodes = r.get("NodeList") or ""
    return "" if nodes in ("(null)", "None assigned", "None") else nodes


def chain_states(chain: dict) -> dict[str, JobState]:
    tasks = {"glue_array": chain.get("glue_tasks", 0), "glue_round2": chain.get("glue_round2_tasks", 0)}
    return {role: job_state(job_id, tasks.get(role)) for role, job_id in chain["jobs"].items()}


def describe(role: str, js: JobState) -> str:
    """One line per job: state, then what it waits for / where it runs / how often it was requeued."""
    parts = [f"{role} job {js.job_id}: {js.state.lower()}"]
    if js.state == "GONE":
        parts = [f"{role} job {js.job_id}: no longer known to the scheduler (ended; no accounting)"]
    if js.reason and js.reason != "None" and js.state in PENDING_STATES | {"PENDING"}:
        parts.append(f"waiting for {js.reason}")
    if js.nodes and js.state in RUNNING_STATES:
        parts.append(f"on {js.nodes}")
    if js.restarts:
        parts.append(f"requeued {js.restarts} time{'s' * (js.restarts != 1)}")
    if js.tasks:
        parts.append(", ".join(f"{n} {k}" for k, n in js.tasks.items()) + " tasks")
    if js.failed and js.exit_code:
        parts.append(f"exit code {js.exit_code}")
    return "; ".join(parts)


BATCH_LOG = "%j_batch.err"  # a SLURM job's batch shell stderr (srun's own messages), beside the ranks' logs


def job_log(chain: dict, job_id: str) -> str:
    """Rank 0's stderr log of a job (``<array>_<task>`` for an array task), as submitit names it."""
    return os.path.join(chain["logs"], f"{job_id}_0_log.err")


def error_line(log_path: str) -> str | None:
    """The last error a job's log names: our one-line user errors first, else the last Python exception."""
    try:
        with open(log_path, errors="replace") as fh:
            lines = [x.strip() for x in fh.read().splitlines()[-400:]]
    except OSError:
        return None
    for line in reversed(lines):
        if line.startswith("hpc_bert: error:"):
            return line[len("hpc_bert: error:"):].strip()[:300]
    for line in reversed(lines):
        if re.match(r"^[\w.]*(Error|Exception|Interrupt)\b.*", line):
            return line[:300]
    return None


def upstream_failure(run_dir: str) -> str | None:
    """Why the aggregation has nothing to aggregate, naming the failed job and its log; None when
    some GLUE run wrote results (the table then shows what finished)."""
    glue_dir = os.path.join(run_dir, GLUE_DIR)
    if any(GLUE_RESULTS in files for _, _, files in os.walk(glue_dir)):
        return None
    chain = read_chain(run_dir) or {"jobs": {}, "logs": os.path.join(run_dir, "submitit")}
    jobs = chain["jobs"]
    try:
        ledger = Ledger.load(run_dir)
    except Exception:  # a corrupt ledger: pretraining cannot have succeeded
        ledger = None
    if ledger is None or not ledger.totals()["done"]:
        pre = jobs.get("pretrain", "?")
        log = job_log(chain, pre)
        why = error_line(log)
        return (f"pretraining job {pre} failed" + (f" ({why})" if why else "") + f": see {log}; the GLUE array "
                f"{jobs.get('glue_array', '?')} was cancelled, so there is no GLUE table: fix the cause and "
                "resubmit the same command (it continues from the newest checkpoint)")
    array = jobs.get("glue_array", "?")
    return (f"no task of GLUE array {array} wrote results: see {os.path.join(chain['logs'], f'{array}_*_0_log.err')}; "
            "fix the cause and run python -m hpc_bert.glue run / aggregate again")

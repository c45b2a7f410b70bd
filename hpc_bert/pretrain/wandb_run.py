"""One Weights & Biases run per run dir, across every allocation (``--report_to ...,wandb``).

The run's id, project, name and entity live in RUN_DIR/wandb_run.json (layout.WANDB_RUN_FILE),
written when the first allocation opens the run; every later allocation, and the GLUE
aggregation job, resumes that id, so a budget split over requeues reads as one run (a
requeue that opens a new run each time is Lightning-AI/pytorch-lightning#13524).
Metrics are plotted against ``step`` (W&B's own ``_step`` restarts in each offline
allocation) and carry ``budget_hours``. Without an API key or without network the run is
offline (WANDB_MODE=offline, files under RUN_DIR/wandb/, ``wandb sync`` uploads them later),
and says so in one line. wandb is an optional extra: ``pip install hpc_bert[wandb]``.
"""
from __future__ import annotations

import os
import secrets
import socket
import sys
from urllib.parse import urlparse

from hpc_bert.atomic import read_json, write_json_atomic
from hpc_bert.layout import WANDB_RUN_FILE, read_events

# Event fields that are bookkeeping, not metrics.
_NOT_METRICS = {"event", "step", "elapsed_s", "wall", "progress"}
# Events whose fields are the run's headline curves (same names as the TensorBoard scalars).
_TOP_LEVEL = {"train", "validation"}


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _reachable(timeout_s: float = 3.0) -> bool:
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    try:
        socket.create_connection((url.hostname or "api.wandb.ai", url.port or 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def choose_mode() -> tuple[str, str | None]:
    """(mode, why offline): WANDB_MODE when the user set it, else online only with a key and network."""
    for name in ("WANDB_MODE", "WANDB_API_KEY"):
        if name in os.environ and not os.environ[name].strip():
            del os.environ[name]  # set but empty is unset (wandb itself rejects an empty WANDB_MODE)
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"], None
    if not _has_api_key():
        return "offline", "no W&B API key (set WANDB_API_KEY or run wandb login)"
    if not _reachable():
        return "offline", "the W&B server is not reachable from this node"
    return "online", None


def read_record(run_dir: str) -> dict | None:
    return read_json(os.path.join(run_dir, WANDB_RUN_FILE))


def to_metrics(record: dict) -> dict:
    """One metrics.jsonl event as a W&B row: train / validation fields by name, the others under
    ``<event>/``; every row carries ``step``, ``budget_hours`` and ``progress``."""
    event = record["event"]
    prefix = "" if event in _TOP_LEVEL else f"{event}/"
    row = {"step": record["step"], "budget_hours": record["elapsed_s"] / 3600.0, "progress": record["progress"]}
    for key, value in record.items():
        if key not in _NOT_METRICS and value is not None and isinstance(value, (int, float, str, bool)):
            row[prefix + key] = value
    return row


class WandbRun:
    """The run dir's W&B run, opened (or resumed) for this process."""

    def __init__(self, run_dir: str, project: str, name: str, entity: str | None, config: dict | None = None,
                 job_type: str = "pretrain"):
        import wandb
        self._wandb = wandb
        record = read_record(run_dir)
        mode, why_offline = choose_mode()
        if why_offline:
            print(f"hpc_bert: W&B runs offline ({why_offline}); upload later with: wandb sync "
                  f"{os.path.join(run_dir, 'wandb')}/offline-run-*", file=sys.stderr, flush=True)
        if record is None:
            record = {"id": secrets.token_hex(6), "project": project, "name": name, "entity": entity,
                      "online": False}
        # "must": an online run that exists on the server must be resumed, never silently replaced;
        # offline (or a run only ever logged offline) there is nothing to check against yet.
        resume = "must" if record.get("online") and mode == "online" else "allow"
        self.id = record["id"]
        self.run = None
        self._guarded("init", self._init, wandb, record, run_dir, mode, resume, job_type, config)
        if self.run is None:
            return
        if mode == "online" and not record["online"]:
            record["online"] = True
        write_json_atomic(os.path.join(run_dir, WANDB_RUN_FILE), record)
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")

    def _init(self, wandb, record: dict, run_dir: str, mode: str, resume: str, job_type: str, config) -> None:
        self.run = wandb.init(id=record["id"], project=record["project"], name=record["name"],
                              group=record["name"], entity=record.get("entity"), dir=run_dir, mode=mode,
                              resume=resume, job_type=job_type, config=config, allow_val_change=True,
                              settings=wandb.Settings(console="off", silent=True))

    def _guarded(self, what: str, call, *args, **kwargs) -> None:
        """W&B must never break training or a stop-save (its service process can die with the
        allocation, e.g. on SIGTERM): the first failure is one line, then W&B is off for this process."""
        try:
            call(*args, **kwargs)
        except Exception as e:  # any W&B failure
            print(f"hpc_bert: W&B {what} failed ({type(e).__name__}: {' '.join(str(e).split())}); metrics.jsonl "
                  "keeps every event, W&B is off for the rest of this allocation", file=sys.stderr, flush=True)
            self.run = None

    def log(self, record: dict) -> None:
        if self.run is not None:
            self._guarded("log", self.run.log, to_metrics(record))

    def mark_preempting(self) -> None:
        """The allocation is ending early and will be requeued: W&B shows the run as preempting."""
        if self.run is not None:
            self._guarded("mark_preempting", self.run.mark_preempting)

    def log_table(self, key: str, columns: list[str], rows: list[list], step: int) -> None:
        self.run.log({"step": step, key: self._wandb.Table(columns=columns, data=rows)})
        for row in rows:
            for col, value in zip(columns[1:], row[1:]):
                self.run.summary[f"{key}/{row[0]}/{col}"] = value

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self._guarded("finish", self.run.finish, exit_code=exit_code)
            self.run = None


def log_glue_table(run_dir: str, csv_path: str) -> bool:
    """After the GLUE array: the table lands in the run dir's W&B run, if the run has one."""
    import csv
    record = read_record(run_dir)
    if record is None or not os.path.exists(csv_path):
        return False
    with open(csv_path, newline="") as fh:
        table = list(csv.reader(fh))
    if not table:
        return False

    def number(cell: str):
        try:
            return float(cell)
        except ValueError:
            return cell

    events = read_events(run_dir)
    run = WandbRun(run_dir, record["project"], record["name"], record.get("entity"), job_type="glue")
    # at the last pretraining step, so the table sits at the end of the run's step axis
    run.log_table("glue", table[0], [[number(c) for c in row] for row in table[1:]],
                  step=max((e["step"] for e in events), default=0))
    run.finish()
    return True

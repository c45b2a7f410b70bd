"""A sweep's leaderboard: one row per member, from each member's run dir and the queue.

Written by the sweep's last job (``afterany`` on every member's aggregation) as
SWEEP_DIR/sweep_results.md and .csv, and shown live by ``python -m hpc_bert.status SWEEP_DIR``
(with each member's queue state). Rows are sorted by the GLUE average of the last fine-tune
checkpoint (``final``), best first; members without it follow, by their last validation loss.
"""
from __future__ import annotations

import csv
import io
import os
import sys
import time

from hpc_bert.atomic import read_json, write_json_atomic, write_text_atomic
from hpc_bert.glue.grid import checkpoint_sort_key
from hpc_bert.launch import queue
from hpc_bert.launch.sweep_grid import flag_value
from hpc_bert.layout import (GLUE_TABLE_CSV, MEMBER_FAILED, SWEEP_FILE, SWEEP_RESULTS_CSV, SWEEP_RESULTS_MD)
from hpc_bert.pretrain.clock import Ledger
from hpc_bert.pretrain.events import read_events

BEST = "best"


def read_sweep(sweep_dir: str) -> dict | None:
    return read_json(os.path.join(sweep_dir, SWEEP_FILE))


def is_sweep_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, SWEEP_FILE))


def mark_failed(run_dir: str, why: str) -> None:
    """A member's pretraining failed: resubmitting the sweep skips it unless --retry_failed."""
    write_json_atomic(os.path.join(run_dir, MEMBER_FAILED), {"failed": time.time(), "why": why[-500:]})


def failure(run_dir: str) -> dict | None:
    return read_json(os.path.join(run_dir, MEMBER_FAILED))


def _ledger(run_dir: str) -> Ledger | None:
    try:
        return Ledger.load(run_dir)
    except Exception:  # a corrupt ledger: the member cannot have finished
        return None


def member_state(run_dir: str) -> tuple[str, dict]:
    """(done / failed / running / pending / cancelled / stopped / not started, the queue's view of
    its jobs: role -> JobState, empty for local sweeps)."""
    ledger = _ledger(run_dir)
    chain = queue.read_chain(run_dir)
    states = queue.chain_states(chain) if chain and chain.get("cluster") == "slurm" else {}
    pre = states.get("pretrain")
    if ledger is not None and ledger.totals()["done"]:
        return "done", states
    if failure(run_dir):
        return "failed", states
    if pre is not None and pre.state in queue.RUNNING_STATES:
        return "running", states
    if pre is not None and pre.state in queue.PENDING_STATES:
        return "pending", states
    if chain and chain.get("cancel_requested"):
        return "cancelled", states
    if pre is not None and pre.failed:
        return "failed", states  # killed hard (no failure written): the scheduler still says so
    return ("stopped" if ledger is not None else "not started"), states


def glue_averages(run_dir: str) -> dict[str, float]:
    """Fine-tune checkpoint -> GLUE average (x100), from the member's GLUE table."""
    path = os.path.join(run_dir, GLUE_TABLE_CSV)
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as fh:
        return {r["checkpoint"]: float(r["glue_avg"]) for r in csv.DictReader(fh) if r.get("glue_avg")}


def member_row(member: dict) -> dict:
    run_dir = member["run_dir"]
    state, jobs = member_state(run_dir)
    ledger = _ledger(run_dir)
    t = ledger.totals() if ledger else None
    steps = ledger.current.step_last if ledger and ledger.allocations else 0
    vals = [e for e in read_events(run_dir) if e["event"] == "validation"]
    samples = steps * member.get("batch", 0)
    return {"name": member["name"], "values": member["values"], "state": state, "jobs": jobs,
            "budget_h": t["elapsed_s"] / 3600 if t else 0.0, "allocations": t["allocations"] if t else 0,
            "steps": steps, "samples": samples,
            "tokens": samples * member["seq_len"] if member.get("seq_len") else None,
            "val_loss": vals[-1]["val_loss"] if vals else None, "glue": glue_averages(run_dir),
            "why": (failure(run_dir) or {}).get("why", "")}


def rows(sweep: dict) -> tuple[list[dict], list[str]]:
    """Every member's row, best first, and the fine-tune checkpoints with a GLUE average."""
    out = [member_row(m) for m in sweep["members"]]
    checkpoints = sorted({c for r in out for c in r["glue"]}, key=checkpoint_sort_key)
    last = checkpoints[-1] if checkpoints else None

    def rank(r):
        score = r["glue"].get(last) if last else None
        return (score is None, -(score or 0.0), r["val_loss"] is None, r["val_loss"] or 0.0)

    out.sort(key=rank)
    if last and out and out[0]["glue"].get(last) is not None:
        out[0]["best"] = True
    return out, checkpoints


def _cells(r: dict, axes: list[str], checkpoints: list[str]) -> list[str]:
    return ([r["name"]] + [flag_value(r["values"][a]) if a in r["values"] else "" for a in axes]
            + [r["state"], f"{r['budget_h']:.3f}", str(r["allocations"]), str(r["steps"]), str(r["samples"]),
               "" if r["tokens"] is None else str(r["tokens"]),
               "" if r["val_loss"] is None else f"{r['val_loss']:.4f}"]
            + [f"{r['glue'][c]:.1f}" if c in r["glue"] else "" for c in checkpoints])


def header(axes: list[str], checkpoints: list[str]) -> list[str]:
    return (["member"] + axes + ["state", "budget_h", "allocations", "steps", "samples", "tokens", "val_loss"]
            + [f"GLUE {c}" for c in checkpoints])


def render_markdown(sweep: dict, table: list[dict], checkpoints: list[str]) -> str:
    axes = sweep["axes"]
    lines = [f"# Sweep {sweep['sweep_dir']}: {len(table)} members", "",
             f"Grid {sweep['grid']} on base {sweep['base']}; budget {sweep['budget']:g} h per member. "
             "Sorted by the GLUE average (dev, x100) of the last fine-tune checkpoint; budget_h: budget spent; "
             "samples: steps x batch size; tokens: samples x sequence length (padded); val_loss: the last "
             "validation MLM loss.", ""]
    head = header(axes, checkpoints)
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in table:
        cells = _cells(r, axes, checkpoints)
        if r.get("best"):
            cells[0] = f"**{cells[0]}** ({BEST})"
        lines.append("| " + " | ".join(cells) + " |")
    failed = [r for r in table if r["state"] == "failed" and r["why"]]
    if failed:
        lines += ["", "Failed members:"] + [f"- {r['name']}: {r['why'].splitlines()[-1]}" for r in failed]
    return "\n".join(lines) + "\n"


def render_csv(sweep: dict, table: list[dict], checkpoints: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header(sweep["axes"], checkpoints) + [BEST])
    for r in table:
        writer.writerow(_cells(r, sweep["axes"], checkpoints) + ["yes" if r.get("best") else ""])
    return buf.getvalue()


def write(sweep_dir: str) -> str:
    """Write sweep_results.md and .csv; returns the markdown."""
    sweep = read_sweep(sweep_dir)
    table, checkpoints = rows(sweep)
    md = render_markdown(sweep, table, checkpoints)
    write_text_atomic(os.path.join(sweep_dir, SWEEP_RESULTS_CSV), render_csv(sweep, table, checkpoints))
    write_text_atomic(os.path.join(sweep_dir, SWEEP_RESULTS_MD), md)
    return md


def _queue_cell(jobs: dict) -> str:
    """A member's jobs in a few words: pretraining task state, GLUE task counts, aggregation."""
    parts = []
    for role, js in jobs.items():
        word = "gone" if js.state == "GONE" else js.state.lower()
        if js.tasks:
            word += " (" + "/".join(f"{n} {k}" for k, n in js.tasks.items() if n) + ")"
        if js.restarts:
            word += f", requeued {js.restarts}x"
        parts.append(f"{role} {js.job_id} {word}")
    return "; ".join(parts) or "-"


def render_live(sweep_dir: str) -> str:
    """The leaderboard as it stands, with each member's queue state (python -m hpc_bert.status)."""
    sweep = read_sweep(sweep_dir)
    table, checkpoints = rows(sweep)
    md = render_markdown(sweep, table, checkpoints).rstrip().splitlines()
    lines = md + ["", "queue:"] + [f"  {r['name']}: {_queue_cell(r['jobs'])}" for r in table]
    last = (sweep.get("submissions") or [{}])[-1]
    if last.get("leaderboard"):
        js = queue.job_state(last["leaderboard"])
        lines.append("  " + queue.describe("leaderboard", js))
    if last.get("cancel_requested"):
        lines.append("  cancelled by python -m hpc_bert.sweep --cancel")
    return "\n".join(lines)


def plot(sweep_dir: str, out: str) -> None:
    """Every member's validation MLM loss against budget hours, one line each."""
    import matplotlib  # optional, heavy: only for --plot
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sweep = read_sweep(sweep_dir)
    fig, ax = plt.subplots(figsize=(8, 5))
    drawn = 0
    for m in sweep["members"]:
        vals = [e for e in read_events(m["run_dir"]) if e["event"] == "validation"]
        if vals:
            ax.plot([e["elapsed_s"] / 3600 for e in vals], [e["val_loss"] for e in vals], "o-", label=m["name"])
            drawn += 1
    ax.set_xlabel("budget hours")
    ax.set_ylabel("validation MLM loss")
    ax.set_title(f"sweep {sweep_dir}: {drawn} of {len(sweep['members'])} members validated")
    if drawn:
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


class LeaderboardTask:
    """The sweep's last job (``afterany`` on every member's aggregation, whatever their outcome)."""

    def __init__(self, sweep_dir: str, workdir: str):
        self.sweep_dir, self.workdir = sweep_dir, workdir

    def __call__(self) -> int:
        os.chdir(self.workdir)
        print(write(self.sweep_dir), flush=True)
        sys.stdout.flush()
        return 0

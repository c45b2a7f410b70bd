"""``python -m hpc_bert.status RUN_DIR [--plot FILE.png] [--watch [SECONDS]]``: where a budgeted run stands
(a sweep dir: its leaderboard, launch/leaderboard.py).

The ledger, budget spent and its ETA, markers, validations and GLUE results from the run dir;
and, for a chain that submit sent to SLURM (RUN_DIR/chain.json), each job's queue state from
launch/queue.py, with the failed job's error line when the chain failed.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

from hpc_bert.pretrain.checkpoint_index import find_latest
from hpc_bert.pretrain.clock import Ledger
from hpc_bert.end_reason import EndReason
from hpc_bert.errors import UserError, exit_on_user_error
from hpc_bert.launch import leaderboard, queue
from hpc_bert.launch.throughput_report import throughput_lines, throughput_panel
from hpc_bert.layout import FINETUNE_DIR, GLUE_DIR, GLUE_RESULTS, GLUE_TABLE_MD, LEDGER_NAME, read_events


def _fmt_wall(t: float | None) -> str:
    return "-" if not t else time.strftime("%m-%d %H:%M:%S", time.localtime(t))


def budget_eta(ledger: Ledger, totals: dict, chain: dict | None, now: float | None = None) -> str:
    """Remaining training time, the allocation time it takes at the measured rate (budget seconds
    per wall second of the current allocation) and, with the allocation length, when it ends."""
    a = ledger.current
    rate = (a.elapsed_last_s - a.elapsed_begin_s) / max((a.end_wall or a.start_wall) - a.start_wall, 1e-9)
    remaining = max(0.0, ledger.budget_s - totals["elapsed_s"])
    line = f"remaining training time {remaining / 3600:.3f} h"
    if rate <= 0:
        return line
    wall_s = remaining / rate
    line += f" (~{wall_s / 3600:.2f} h of allocation at the current rate"
    alloc_h = (chain or {}).get("allocation_hours")
    if alloc_h:
        startups = [x.startup_s for x in ledger.allocations]
        startup_s = sum(startups) / len(startups)
        useful_s = max(1.0, alloc_h * 3600 - startup_s)
        running = a.end_reason is None  # end_wall is the latest heartbeat until the allocation ends
        left_in_current = max(0.0, a.start_wall + alloc_h * 3600 - (now or time.time())) if running else 0.0
        more = max(0, math.ceil((wall_s - left_in_current) / useful_s)) if wall_s > left_in_current else 0
        eta = (now or time.time()) + wall_s + more * startup_s
        line += (f", {more} more allocation{'s' * (more != 1)} of {alloc_h:g} h; budget ETA {_fmt_wall(eta)} "
                 "without queue waits")
    return line + ")"


def budget_change_lines(ledger: Ledger) -> list[str]:
    """--curve wsd facts and every budget change: when, old -> new, from which checkpoint."""
    out = []
    if ledger.warmup_s is not None:
        starts = ", ".join(f"{c['tag']} at {c['elapsed_s']:.0f} s" for c in ledger.decay_start_checkpoints)
        out.append(f"wsd: warmup {ledger.warmup_s:.0f} s; decay-start checkpoints: {starts or 'none yet'}")
    if ledger.budget_changes:
        out.append("budget changes:")
    for c in ledger.budget_changes:
        out.append(f"  {_fmt_wall(c['wall'])}: {c['old_budget_s'] / 3600:.4g} h -> {c['new_budget_s'] / 3600:.4g} h "
                   f"({c['kind']}) from {c['from_tag']} at {c['from_elapsed_s']:.0f} s"
                   + (f"; abandoned {c['abandoned_s']:.0f} s of decay ({', '.join(c['abandoned'])}: kept, never "
                      "resumed)" if c.get("abandoned") else ""))
    return out


def chain_lines(run_dir: str, chain: dict, ledger: Ledger | None) -> tuple[list[str], str | None]:
    """Each job's queue state; what the run dir says of the jobs the scheduler forgot; the failure.
    Returns (lines, the failure line or None)."""
    cancelled = _cancelled(ledger)
    out = ["", f"chain ({chain['cluster']}, submitted {_fmt_wall(chain.get('submitted'))})"
           + (" - cancelled by submit --cancel" if chain.get("cancel_requested") else "") + ":"]
    states = queue.chain_states(chain)
    for role, js in states.items():
        line = queue.describe(role, js)
        if role == "pretrain" and cancelled and js.state in queue.DONE_STATES | {"GONE"}:
            # the job ended cleanly (status 0) because of the cancel: say so, not "completed"
            line = (f"pretrain job {js.job_id}: cancelled by submit --cancel after saving step "
                    f"{ledger.current.step_last}; the same submit command continues")
        elif js.state == "GONE":
            line += "; " + _gone_outcome(run_dir, role, chain, ledger)
        out.append("  " + line)
    failure = None
    pre = states.get("pretrain")
    if pre is not None and (pre.failed or pre.state == "GONE") and not (ledger and ledger.totals()["done"]) \
            and not cancelled:
        log = queue.job_log(chain, pre.job_id)
        why = queue.error_line(log)
        if why or pre.failed:
            when = " before training started" if ledger is None else ""
            failure = f"pretraining job {pre.job_id} failed{when}: {why or 'no error line in its log'} (log: {log})"
    agg = states.get("aggregate")
    if failure is None and agg is not None and (agg.failed or agg.state == "GONE") and not cancelled:
        why = queue.error_line(queue.job_log(chain, agg.job_id))
        if why and not os.path.exists(os.path.join(run_dir, GLUE_TABLE_MD)):
            failure = f"aggregation job {agg.job_id} failed: {why}"
    if failure:
        out.append(f"  FAILED: {failure}")
    return out, failure


def _cancelled(ledger: Ledger | None) -> bool:
    return bool(ledger and ledger.allocations and ledger.current.end_reason == EndReason.CANCELLED)


def _gone_outcome(run_dir: str, role: str, chain: dict, ledger: Ledger | None) -> str:
    if role == "pretrain":
        return "the ledger says the budget is done" if ledger and ledger.totals()["done"] else "the budget is not done"
    if role == "glue_array":
        done = sum(GLUE_RESULTS in files for _, _, files in os.walk(os.path.join(run_dir, GLUE_DIR)))
        return f"{done} of {chain.get('glue_tasks', '?')} GLUE runs wrote results"
    return "the GLUE table is written" if os.path.exists(os.path.join(run_dir, GLUE_TABLE_MD)) else "no GLUE table"


def render(run_dir: str) -> str:
    if not os.path.isdir(run_dir):
        raise UserError(f"run dir {run_dir} does not exist: pass the --output_dir / --run_dir of a run")
    ledger = Ledger.load(run_dir)
    chain = queue.read_chain(run_dir)
    lines = [f"run dir: {run_dir}"]
    chain_part, failure = chain_lines(run_dir, chain, ledger) if chain and chain.get("cluster") == "slurm" \
        else ([], None)
    if ledger is None:
        lines.append("pretraining failed before training started (below: why)" if failure else
                     f"no ledger yet ({LEDGER_NAME}): the job has not started training")
    else:
        t = ledger.totals()
        state = "done" if t["done"] else "cancelled by submit --cancel" if _cancelled(ledger) else "not done"
        lines.append(f"budget: {ledger.budget_s / 3600:g} h; spent {t['elapsed_s'] / 3600:.3f} h "
                     f"({t['progress']:.1%}); allocations {t['allocations']}, requeues {t['requeues']}"
                     + (f", resubmissions {t['resubmissions']}" if t["resubmissions"] else "") + f"; {state}")
        overhead = t["startup_s"] + t["lost_s"]
        lines.append(f"time: train {t['train_s']:.1f} s, validation {t['validation_s']:.1f} s, checkpoint "
                     f"{t['checkpoint_s']:.1f} s; overhead: startup {t['startup_s']:.1f} s, lost {t['lost_s']:.1f} s "
                     f"({overhead:.1f} s)")
        if not t["done"] and ledger.allocations:
            lines.append(budget_eta(ledger, t, chain))
        lines += budget_change_lines(ledger)
        hdr = ["#", "job", "restart", "hosts", "ranks", "start", "end", "startup_s", "train_s", "val_s", "ckpt_s",
               "lost_s", "elapsed_s", "steps", "end reason"]
        rows = [[str(i), a.job_id, str(a.restart_count), ",".join(a.hosts), str(a.world_size or "-"),
                 _fmt_wall(a.start_wall),
                 _fmt_wall(a.end_wall), f"{a.startup_s:.1f}", f"{a.train_s:.1f}", f"{a.validation_s:.1f}",
                 f"{a.checkpoint_s:.1f}", f"{a.lost_s:.1f}", f"{a.elapsed_begin_s:.0f}->{a.elapsed_last_s:.0f}",
                 f"{a.step_begin}->{a.step_last}", a.end_reason or "(running or died)"]
                for i, a in enumerate(ledger.allocations)]
        widths = [max(len(r[i]) for r in [hdr] + rows) for i in range(len(hdr))]
        lines.append("")
        for r in [hdr] + rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    events = read_events(run_dir)
    vals = [e for e in events if e["event"] == "validation"]
    marks = [e for e in events if e["event"] == "marker"]
    lines.append("")
    lines.append(f"validations: {len(vals)}" + "".join(
        f"\n  step {e['step']} ({e['progress']:.1%}): loss {e['val_loss']:.4f}" for e in vals))
    lines += throughput_lines(events, ledger)
    done_markers = ", ".join(f"{e['marker']:g} @ step {e['step']}" for e in marks) or "none yet"
    lines.append(f"fine-tune markers: {done_markers}")
    ft = os.path.join(run_dir, FINETUNE_DIR)
    if os.path.isdir(ft):
        lines.append(f"fine-tune checkpoints: {', '.join(sorted(os.listdir(ft)))}")
    latest = find_latest(run_dir)
    if latest:
        lines.append(f"newest training checkpoint: {latest['tag']} at {latest['elapsed_s']:.1f} s")
    table = os.path.join(run_dir, GLUE_TABLE_MD)
    if os.path.exists(table):
        lines += ["", "GLUE:", open(table).read().rstrip()]
    return "\n".join(lines + chain_part)


def plot(run_dir: str, out: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    events = read_events(run_dir)
    train = sorted({e["step"]: e for e in events if e["event"] == "train"}.values(), key=lambda e: e["step"])
    vals = [e for e in events if e["event"] == "validation"]
    if not train:
        raise UserError(f"no train events in {run_dir}/metrics.jsonl yet: plot again once training logged a step")
    hours = [e["elapsed_s"] / 3600 for e in train]
    fig, (ax_lr, ax_loss, ax_tput) = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    ax_lr.plot(hours, [e["lr"] for e in train])
    ax_lr.set_ylabel("learning rate")
    ax_loss.plot(hours, [e["loss"] for e in train], label="train")
    if vals:
        ax_loss.plot([e["elapsed_s"] / 3600 for e in vals], [e["val_loss"] for e in vals], "o-", label="validation")
    for e in events:
        if e["event"] == "allocation_start" and e["elapsed_s"] > 0:
            for ax in (ax_lr, ax_loss, ax_tput):
                ax.axvline(e["elapsed_s"] / 3600, color="grey", linestyle=":", linewidth=0.8)
        if e["event"] == "checkpoint" and e.get("reason") == "decay_start":  # --curve wsd: the decay begins
            ax_lr.axvline(e["elapsed_s"] / 3600, color="red", linestyle="--", linewidth=0.8)
    ax_loss.set_ylabel("MLM loss")
    ax_loss.legend()
    throughput_panel(ax_tput, train)
    ax_tput.set_xlabel("budget hours (dotted: requeued allocations; dashed: a wsd decay start)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


@exit_on_user_error
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hpc_bert.status", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--plot", help="write a PNG of LR, loss and throughput against budget hours")
    p.add_argument("--watch", nargs="?", type=float, const=30.0, default=None, metavar="SECONDS",
                   help="refresh every SECONDS (default 30) until the chain has left the queue; Ctrl-C stops")
    p.add_argument("--watch_count", type=int, default=0, help=argparse.SUPPRESS)  # tests: stop after N screens
    args = p.parse_args(argv)
    if args.watch is not None and args.watch <= 0:
        raise UserError(f"--watch {args.watch:g}: the refresh interval must be > 0 seconds, e.g. --watch 30")
    if leaderboard.is_sweep_dir(args.run_dir):  # a sweep dir: the live leaderboard, every member's loss
        print(leaderboard.render_live(args.run_dir))
        if args.plot:
            leaderboard.plot(args.run_dir, args.plot)
            print(f"plot: {args.plot}")
        return 0
    if args.watch is None:
        print(render(args.run_dir))
    else:
        watch(args.run_dir, args.watch, args.watch_count)
    if args.plot:
        plot(args.run_dir, args.plot)
        print(f"plot: {args.plot}")
    return 0


def watch(run_dir: str, seconds: float, count: int = 0) -> None:
    """Redraw the status every ``seconds`` until no job of the chain is queued (or ``count`` screens)."""
    shown = 0
    try:
        while True:
            text = render(run_dir)
            clear = "\033[H\033[2J" if sys.stdout.isatty() else ""
            print(f"{clear}{text}\n\n(refreshed {_fmt_wall(time.time())}, every {seconds:g} s; Ctrl-C stops)",
                  flush=True)
            shown += 1
            chain = queue.read_chain(run_dir)
            live = chain is not None and any(
                js.state in queue.RUNNING_STATES | queue.PENDING_STATES for js in queue.chain_states(chain).values())
            if (count and shown >= count) or (chain is not None and not live):
                return
            time.sleep(seconds)
    except KeyboardInterrupt:
        return

"""``python -m hpc_bert.status RUN_DIR [--plot FILE.png]``: where a budgeted run stands."""
from __future__ import annotations

import argparse
import os
import sys
import time

from hpc_bert.pretrain.checkpoint import find_latest
from hpc_bert.pretrain.clock import Ledger
from hpc_bert.errors import UserError, exit_on_user_error
from hpc_bert.pretrain.events import read_events
from hpc_bert.layout import FINETUNE_DIR, GLUE_TABLE_MD, LEDGER_NAME


def _fmt_wall(t: float | None) -> str:
    return "-" if not t else time.strftime("%m-%d %H:%M:%S", time.localtime(t))


def render(run_dir: str) -> str:
    if not os.path.isdir(run_dir):
        raise UserError(f"run dir {run_dir} does not exist: pass the --output_dir / --run_dir of a run")
    ledger = Ledger.load(run_dir)
    lines = [f"run dir: {run_dir}"]
    if ledger is None:
        lines.append(f"no ledger yet ({LEDGER_NAME}): the job has not started training")
    else:
        t = ledger.totals()
        lines.append(f"budget: {ledger.budget_s / 3600:g} h; spent {t['elapsed_s'] / 3600:.3f} h "
                     f"({t['progress']:.1%}); allocations {t['allocations']}, requeues {t['requeues']}; "
                     + ("done" if t["done"] else "not done"))
        overhead = t["startup_s"] + t["lost_s"]
        lines.append(f"time: train {t['train_s']:.1f} s, validation {t['validation_s']:.1f} s, checkpoint "
                     f"{t['checkpoint_s']:.1f} s; overhead: startup {t['startup_s']:.1f} s, lost {t['lost_s']:.1f} s "
                     f"({overhead:.1f} s)")
        if not t["done"] and ledger.allocations:
            a = ledger.current
            rate = (a.elapsed_last_s - a.elapsed_begin_s) / max((a.end_wall or a.start_wall) - a.start_wall, 1e-9)
            remaining = max(0.0, ledger.budget_s - t["elapsed_s"])
            lines.append(f"remaining training time {remaining / 3600:.3f} h"
                         + (f" (~{remaining / rate / 3600:.2f} h of allocation at the current rate)" if rate > 0 else ""))
        hdr = ["#", "job", "restart", "hosts", "start", "end", "startup_s", "train_s", "val_s", "ckpt_s",
               "lost_s", "elapsed_s", "steps", "end reason"]
        rows = [[str(i), a.job_id, str(a.restart_count), ",".join(a.hosts), _fmt_wall(a.start_wall),
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
    return "\n".join(lines)


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
    fig, (ax_lr, ax_loss) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    ax_lr.plot(hours, [e["lr"] for e in train])
    ax_lr.set_ylabel("learning rate")
    ax_loss.plot(hours, [e["loss"] for e in train], label="train")
    if vals:
        ax_loss.plot([e["elapsed_s"] / 3600 for e in vals], [e["val_loss"] for e in vals], "o-", label="validation")
    for e in events:
        if e["event"] == "allocation_start" and e["elapsed_s"] > 0:
            for ax in (ax_lr, ax_loss):
                ax.axvline(e["elapsed_s"] / 3600, color="grey", linestyle=":", linewidth=0.8)
    ax_loss.set_ylabel("MLM loss")
    ax_loss.set_xlabel("budget hours (dotted: requeued allocations)")
    ax_loss.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


@exit_on_user_error
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hpc_bert.status", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--plot", help="write a PNG of LR and loss against budget hours")
    args = p.parse_args(argv)
    print(render(args.run_dir))
    if args.plot:
        plot(args.run_dir, args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

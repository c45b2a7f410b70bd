"""Everything time-driven, as pure functions of progress (or elapsed seconds).

No step-based state machine: the trainer asks these functions what is due *now*, given the
clock and the set of one-off events already done (which the checkpoint carries). A run
split over any number of allocations therefore makes the same decisions at the same
budget progress as an uninterrupted one.

``python -m hpc_bert.schedule --total_training_time 24 --warmup_proportion 0.06 --points 9``
prints the schedule as a table.
"""
from __future__ import annotations

import math
import sys
from typing import Iterable, Sequence

from hpc_bert.config.flags import parse_config
from hpc_bert.config.pretrain import PretrainConfig
from hpc_bert.errors import ConfigError, exit_on_user_error
from hpc_bert.end_reason import EndReason

# Exponential decay reaches exp(-EXP_RATE) of the peak before being shifted to hit 0 at the end.
EXP_RATE = 5.0


def lr_multiplier(progress: float, warmup_proportion: float, curve: str) -> float:
    """LR / peak LR at ``progress`` in [0, 1]: linear warmup, then ``curve`` decays to 0.

    Continuous everywhere: both branches equal 1 at the end of warmup whatever the budget
    (ABB divides by max(1.0, T - W) in hours, which jumps for budgets under an hour).
    """
    p = min(max(progress, 0.0), 1.0)
    w = warmup_proportion
    if w > 0 and p < w:
        return p / w
    if curve == "constant":
        return 1.0
    x = (p - w) / (1.0 - w)  # decay progress in [0, 1]
    if curve == "linear":
        return 1.0 - x
    if curve == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * x))
    if curve == "exp":
        return (math.exp(-EXP_RATE * x) - math.exp(-EXP_RATE)) / (1.0 - math.exp(-EXP_RATE))
    raise ValueError(f"unknown curve {curve!r}")


def schedule_progress(lr_schedule: str, elapsed_s: float, budget_s: float, step: int,
                      max_steps: int | None) -> float:
    """The progress the LR schedule reads: budget time, or steps for step schedules."""
    if lr_schedule == "time":
        return elapsed_s / budget_s
    return step / float(max_steps)


def learning_rate(peak_lr: float, lr_schedule: str, curve: str, warmup_proportion: float,
                  elapsed_s: float, budget_s: float, step: int = 0, max_steps: int | None = None) -> float:
    progress = schedule_progress(lr_schedule, elapsed_s, budget_s, step, max_steps)
    if lr_schedule == "constant_step":
        curve = "constant"  # warm up over steps, then hold the peak
    return peak_lr * lr_multiplier(progress, warmup_proportion, curve)


def stop_reason(elapsed_s: float, budget_s: float, early_exit_s: float | None) -> EndReason | None:
    """BUDGET_DONE / EARLY_EXIT once training time is spent, else None."""
    if elapsed_s >= budget_s:
        return EndReason.BUDGET_DONE
    if early_exit_s is not None and elapsed_s >= early_exit_s:
        return EndReason.EARLY_EXIT
    return None


def validation_interval(progress: float, epochs_begin: int, epochs_middle: int, epochs_end: int,
                        begin_proportion: float, end_proportion: float) -> int:
    """Epochs between validations at ``progress``: dense at the begin and end, sparse between."""
    if progress < begin_proportion:
        return epochs_begin
    if progress >= 1.0 - end_proportion:
        return epochs_end
    return epochs_middle


def validation_phase(progress: float, begin_proportion: float, end_proportion: float) -> str:
    if progress < begin_proportion:
        return "begin"
    if progress >= 1.0 - end_proportion:
        return "end"
    return "middle"


def validation_due(epochs_done: int, progress: float, done: Iterable[int], *, epochs_begin: int,
                   epochs_middle: int, epochs_end: int, begin_proportion: float, end_proportion: float) -> bool:
    """Validate after epoch number ``epochs_done`` (1-based) unless already done for it."""
    if epochs_done <= 0 or epochs_done in set(done):
        return False
    interval = validation_interval(progress, epochs_begin, epochs_middle, epochs_end,
                                   begin_proportion, end_proportion)
    return epochs_done % interval == 0


def markers_due(progress: float, markers: Sequence[float], done: Iterable[float]) -> list[float]:
    """Fine-tune markers reached by ``progress`` and not yet saved, oldest first.

    A marker is never skipped (a step that jumps past several returns them all) and never
    repeated (the caller adds each returned marker to ``done``, which outlives restarts).
    """
    done_set = {round(m, 9) for m in done}
    return [m for m in sorted(markers) if progress >= m - 1e-12 and round(m, 9) not in done_set]


def early_stop(elapsed_s: float, eval_loss: float, early_stop_time_min: float, early_stop_eval_loss: float) -> bool:
    """ABB's rule: after ``early_stop_time`` minutes, stop when validation loss is still too high."""
    return elapsed_s >= early_stop_time_min * 60.0 and eval_loss > early_stop_eval_loss


# ---- the table ------------------------------------------------------------------------

def schedule_table(cfg, points: int) -> list[dict]:
    """Rows at ``points`` evenly spaced progress values of the budget (pure)."""
    s, v = cfg.schedule, cfg.validation
    rows, prev = [], -1.0
    for i in range(points):
        p = i / (points - 1) if points > 1 else 1.0
        elapsed = p * s.budget_s
        max_steps = s.max_steps or 1
        lr = learning_rate(cfg.optim.lr, s.lr_schedule, s.curve, s.warmup_proportion, elapsed, s.budget_s,
                           step=round(p * max_steps), max_steps=max_steps)
        events = [f"marker {m:g}" for m in s.finetune_time_markers if prev < m <= p]
        if v.do_validation:
            every = validation_interval(p, v.validation_epochs_begin, v.validation_epochs,
                                        v.validation_epochs_end, v.validation_begin_proportion,
                                        v.validation_end_proportion)
            phase = validation_phase(p, v.validation_begin_proportion, v.validation_end_proportion)
            events.append(f"validate every {every} epoch(s) ({phase})")
        if s.warmup_proportion and prev < s.warmup_proportion <= p:
            events.append("warmup ends")
        reason = stop_reason(elapsed, s.budget_s, None if s.early_exit_time_marker is None
                             else s.early_exit_time_marker * 3600.0)
        if reason:
            events.append(reason)
        rows.append({"progress": p, "elapsed_h": elapsed / 3600.0, "lr_multiplier": lr / cfg.optim.lr,
                     "lr": lr, "events": events})
        prev = p
    return rows


@exit_on_user_error
def main(argv=None) -> int:
    cfg, extra = parse_config(PretrainConfig, argv, prog="python -m hpc_bert.schedule",
                              description="print the time-driven schedule as a table",
                              extra=[("--points", {"type": int, "default": 11, "help": "rows"})])
    if extra.points < 1:
        raise ConfigError("--points must be >= 1")
    print(f"{'progress':>8}  {'elapsed_h':>9}  {'lr_mult':>8}  {'lr':>10}  events")
    for r in schedule_table(cfg, extra.points):
        print(f"{r['progress']:8.3f}  {r['elapsed_h']:9.3f}  {r['lr_multiplier']:8.4f}  {r['lr']:10.3e}  "
              + "; ".join(r["events"]))
    for note in cfg.notes():
        print(f"note: {note}", file=sys.stderr)
    return 0


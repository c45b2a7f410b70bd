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
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

from hpc_bert.config.flags import parse_config
from hpc_bert.config.pretrain import PretrainConfig
from hpc_bert.errors import ConfigError, exit_on_user_error
from hpc_bert.end_reason import EndReason
from hpc_bert.pretrain.clock import budget_progress

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


def decay_multiplier(x: float, shape: str) -> float:
    """The WSD decay at decay progress ``x`` in [0, 1]: 1 -> 0, non-increasing."""
    x = min(max(x, 0.0), 1.0)
    if shape == "linear":
        return 1.0 - x
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * x))
    if shape == "sqrt":
        return 1.0 - math.sqrt(x)
    raise ValueError(f"unknown decay shape {shape!r}")


@dataclass(frozen=True)
class WsdPlan:
    """Warmup-stable-decay in budget seconds: warm up to the peak over ``warmup_s``, hold it,
    then decay from ``decay_from`` (1 unless the end was brought forward once the decay had
    begun) at ``decay_start_s`` to 0 at ``end_s``. The warmup is fixed in seconds when a run
    starts, so a budget change moves only the decay; the plan travels in checkpoint metas."""
    warmup_s: float
    decay_start_s: float
    end_s: float
    decay_from: float = 1.0
    shape: str = "linear"

    @classmethod
    def fresh(cls, budget_s: float, warmup_proportion: float, decay_proportion: float, shape: str,
              warmup_s: float | None = None) -> "WsdPlan":
        """The plan of a run with ``budget_s`` (and, after a change, the warmup it started with)."""
        return cls(warmup_proportion * budget_s if warmup_s is None else warmup_s,
                   budget_s * (1.0 - decay_proportion), budget_s, 1.0, shape)

    @classmethod
    def from_dict(cls, d: dict, shape: str) -> "WsdPlan":
        return cls(float(d["warmup_s"]), float(d["decay_start_s"]), float(d["end_s"]),
                   float(d.get("decay_from", 1.0)), shape)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "shape"}

    def multiplier(self, elapsed_s: float) -> float:
        if elapsed_s >= self.end_s:
            return 0.0
        if elapsed_s >= self.decay_start_s:
            x = (elapsed_s - self.decay_start_s) / (self.end_s - self.decay_start_s)
            return self.decay_from * decay_multiplier(x, self.shape)
        if self.warmup_s > 0 and elapsed_s < self.warmup_s:
            return max(elapsed_s, 0.0) / self.warmup_s
        return 1.0


def schedule_progress(lr_schedule: str, elapsed_s: float, budget_s: float, step: int,
                      max_steps: int | None) -> float:
    """The progress the LR schedule reads: budget time, or steps for step schedules."""
    if lr_schedule == "time":
        return budget_progress(elapsed_s, budget_s)
    return step / float(max_steps)


def learning_rate(peak_lr: float, lr_schedule: str, curve: str, warmup_proportion: float,
                  elapsed_s: float, budget_s: float, step: int = 0, max_steps: int | None = None,
                  wsd: WsdPlan | None = None) -> float:
    if curve == "wsd":  # seconds, not progress: the plan outlives budget changes
        if wsd is None:
            raise ValueError("--curve wsd needs its WsdPlan")
        return peak_lr * wsd.multiplier(elapsed_s)
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


def wsd_plan(s) -> WsdPlan:
    """The plan a fresh --curve wsd run with schedule config ``s`` starts with."""
    return WsdPlan.fresh(s.budget_s, s.warmup_proportion, s.decay_proportion, s.decay_shape)


# ---- the table ------------------------------------------------------------------------

def schedule_table(cfg, points: int) -> list[dict]:
    """Rows at ``points`` evenly spaced progress values of the budget (pure)."""
    s, v = cfg.schedule, cfg.validation
    rows, prev = [], -1.0
    wsd = wsd_plan(s) if s.curve == "wsd" else None
    for i in range(points):
        p = i / (points - 1) if points > 1 else 1.0
        elapsed = p * s.budget_s
        max_steps = s.max_steps or 1
        lr = learning_rate(cfg.optim.lr, s.lr_schedule, s.curve, s.warmup_proportion, elapsed, s.budget_s,
                           step=round(p * max_steps), max_steps=max_steps, wsd=wsd)
        events = [f"marker {m:g}" for m in s.finetune_time_markers if prev < m <= p]
        if v.do_validation:
            every = validation_interval(p, v.validation_epochs_begin, v.validation_epochs,
                                        v.validation_epochs_end, v.validation_begin_proportion,
                                        v.validation_end_proportion)
            phase = validation_phase(p, v.validation_begin_proportion, v.validation_end_proportion)
            events.append(f"validate every {every} epoch(s) ({phase})")
        if s.warmup_proportion and prev < s.warmup_proportion <= p:
            events.append("warmup ends")
        if wsd and prev * s.budget_s < wsd.decay_start_s <= elapsed:
            events.append("decay starts (decay-start checkpoint)")
        reason = stop_reason(elapsed, s.budget_s, s.early_exit_s)
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


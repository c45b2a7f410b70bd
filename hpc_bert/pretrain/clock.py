"""The budget clock and the ledger: the only module that knows about elapsed time.

``elapsed`` counts training time — steps, validation and checkpoint saves — from the first
training step of an allocation to its exit, on top of the elapsed value stored in the
checkpoint the allocation resumed from. Startup and queue waits are recorded in the
ledger but never count. ``progress = elapsed / budget``.

Two clocks share one interface: the wall clock reads ``time.monotonic``; the simulated
clock advances a fixed number of seconds per optimizer step, so a 24 h schedule can be
rehearsed in seconds and a resumed run can be compared bit for bit with an uninterrupted
one.

The ledger RUN_DIR/budget.json lists every allocation. It is rewritten atomically at each
heartbeat, so after a crash it still tells how far the lost allocation got; the next
allocation records that work as ``lost_s``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from typing import Iterator

from hpc_bert import runenv
from hpc_bert.atomic import write_json_atomic
from hpc_bert.end_reason import EndReason
from hpc_bert.errors import UserError
from hpc_bert.layout import LEDGER_NAME
from hpc_bert.pretrain import faults

LEDGER_VERSION = 1
PHASES = ("train", "validation", "checkpoint")


def budget_progress(elapsed_s: float, budget_s: float) -> float:
    """The fraction of the budget spent: what the schedule, markers, events and the ledger read."""
    return elapsed_s / budget_s


def deadline_margin_s(save_s: float, step_s: float) -> float:
    """How long before a known allocation end to stop: a checkpoint save and a few steps, as measured
    (at least 10 s)."""
    return max(10.0, 2.0 * save_s + 3.0 * step_s)


class BudgetClock:
    """Elapsed training seconds, resumable. ``start()`` at the first training step."""

    def __init__(self, budget_s: float, resumed_elapsed_s: float = 0.0,
                 simulated_step_seconds: float | None = None, now=time.monotonic):
        self.budget_s = float(budget_s)
        self.resumed_elapsed_s = float(resumed_elapsed_s)
        self.simulated_step_seconds = simulated_step_seconds
        self._now = now
        self._t0: float | None = None
        self._steps = 0
        # wall seconds per phase in this allocation, for the ledger (both clocks)
        self.phase_s = {p: 0.0 for p in PHASES}
        self._phase_stack: list[tuple[str, float]] = []

    @property
    def simulated(self) -> bool:
        return self.simulated_step_seconds is not None

    def start(self) -> None:
        if self._t0 is None:
            self._t0 = self._now()
            self._phase_stack = [("train", self._t0)]

    def wall_since_start(self) -> float:
        return 0.0 if self._t0 is None else self._now() - self._t0

    def elapsed(self) -> float:
        if self.simulated:
            return self.resumed_elapsed_s + self._steps * self.simulated_step_seconds
        return self.resumed_elapsed_s + self.wall_since_start()

    def progress(self) -> float:
        return budget_progress(self.elapsed(), self.budget_s)

    def on_optimizer_step(self) -> None:
        self._steps += 1

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Attribute the wall time inside the block to ``name`` (validation, checkpoint)."""
        assert name in PHASES
        now = self._now()
        if self._phase_stack:
            outer, since = self._phase_stack[-1]
            self.phase_s[outer] += now - since
        self._phase_stack.append((name, now))
        try:
            yield
        finally:
            end = self._now()
            inner, since = self._phase_stack.pop()
            self.phase_s[inner] += end - since
            if self._phase_stack:
                outer, _ = self._phase_stack[-1]
                self._phase_stack[-1] = (outer, end)

    def phase_totals(self) -> dict[str, float]:
        """Per-phase wall seconds so far, including the open phase."""
        out = dict(self.phase_s)
        if self._phase_stack:
            name, since = self._phase_stack[-1]
            out[name] += self._now() - since
        return out


@dataclass
class Allocation:
    job_id: str
    restart_count: int
    hosts: list[str]
    start_wall: float
    end_wall: float | None = None
    startup_s: float = 0.0
    train_s: float = 0.0
    validation_s: float = 0.0
    checkpoint_s: float = 0.0
    lost_s: float = 0.0
    end_reason: str | None = None
    elapsed_begin_s: float = 0.0   # budget elapsed when this allocation resumed
    elapsed_last_s: float = 0.0    # budget elapsed at the latest heartbeat
    elapsed_saved_s: float = 0.0   # budget elapsed of the newest checkpoint it wrote
    step_begin: int = 0
    step_last: int = 0
    world_size: int | None = None  # ranks of this allocation (None: a ledger written before it was recorded)


@dataclass
class Ledger:
    run_dir: str
    budget_s: float
    allocations: list[Allocation] = field(default_factory=list)
    warmup_s: float | None = None  # --curve wsd: the warmup's length, fixed when the run started
    budget_changes: list[dict] = field(default_factory=list)  # when, old -> new, from which checkpoint
    decay_start_checkpoints: list[dict] = field(default_factory=list)  # --curve wsd: tag, step, elapsed_s
    saves: int = field(default=0, repr=False, compare=False)  # writes by this process (a fault point)

    @property
    def path(self) -> str:
        return os.path.join(self.run_dir, LEDGER_NAME)

    # ---- reading -------------------------------------------------------------------
    @classmethod
    def load(cls, run_dir: str) -> "Ledger | None":
        """The ledger of ``run_dir``, None if there is none; a damaged one is never replaced."""
        path = os.path.join(run_dir, LEDGER_NAME)
        if not os.path.exists(path):
            return None
        fix = (f"move {path} aside to start a fresh ledger (checkpoints are untouched and "
               "training resumes from them), or restore it from a backup")
        try:
            with open(path) as fh:
                raw = json.load(fh)
            if raw.get("version") != LEDGER_VERSION:
                raise ValueError(f"unknown version {raw.get('version')!r}")
            names = {f.name for f in dataclasses.fields(Allocation)}
            allocs = [Allocation(**{k: v for k, v in a.items() if k in names}) for a in raw["allocations"]]
            return cls(run_dir=run_dir, budget_s=float(raw["budget_s"]), allocations=allocs,
                       warmup_s=raw.get("warmup_s"), budget_changes=list(raw.get("budget_changes", [])),
                       decay_start_checkpoints=list(raw.get("decay_start_checkpoints", [])))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise UserError(f"ledger {path} is corrupt or partial ({type(e).__name__}: {e}): {fix}") from None

    # ---- writing -------------------------------------------------------------------
    def save(self) -> None:
        os.makedirs(self.run_dir, exist_ok=True)
        self.saves += 1
        # tests: a kill with the new ledger written to its temp file, not yet renamed over the old
        write_json_atomic(self.path, self.to_json(), before_commit=lambda: faults.at("ledger", self.saves))

    def to_json(self) -> dict:
        return {"version": LEDGER_VERSION, "budget_s": self.budget_s,
                "budget_hours": self.budget_s / 3600.0, "totals": self.totals(),
                "allocations": [dataclasses.asdict(a) for a in self.allocations],
                **({"warmup_s": self.warmup_s} if self.warmup_s is not None else {}),
                "budget_changes": self.budget_changes, "decay_start_checkpoints": self.decay_start_checkpoints}

    def totals(self) -> dict:
        sums = {k: sum(getattr(a, k) for a in self.allocations)
                for k in ("startup_s", "train_s", "validation_s", "checkpoint_s", "lost_s")}
        elapsed = self.allocations[-1].elapsed_last_s if self.allocations else 0.0
        # training time of a decay that an extension restarted: spent, but not progress
        abandoned = sum(c.get("abandoned_s", 0.0) for c in self.budget_changes)
        return {**sums, "elapsed_s": elapsed, "progress": budget_progress(elapsed, self.budget_s),
                "abandoned_s": abandoned,
                "allocations": len(self.allocations),
                **self.restarts(),
                "done": bool(self.allocations) and self.allocations[-1].end_reason is not None
                and EndReason(self.allocations[-1].end_reason).finished}

    def restarts(self) -> dict:
        """How the allocations after the first began: ``requeues`` (the scheduler put the same job
        back in the queue: same job id) and ``resubmissions`` (a new job: the same command submitted
        again, e.g. after a cancel or a failure)."""
        pairs = list(zip(self.allocations, self.allocations[1:]))
        requeues = sum(a.job_id == b.job_id for a, b in pairs)
        return {"requeues": requeues, "resubmissions": len(pairs) - requeues}

    @property
    def current(self) -> Allocation:
        return self.allocations[-1]

    def begin_allocation(self, *, resumed_elapsed_s: float, step: int, startup_s: float,
                         job_id: str | None = None, restart_count: int | None = None,
                         hosts: list[str] | None = None, start_wall: float | None = None,
                         world_size: int | None = None, newest_elapsed_s: float | None = None) -> Allocation:
        """Open a new allocation record; close a dangling one (its job died) as a crash."""
        if self.allocations and self.allocations[-1].end_reason is None:
            dead = self.allocations[-1]
            dead.end_reason = EndReason.CRASH
            dead.end_wall = dead.end_wall or time.time()
        if self.allocations:
            # Work the previous allocation did after the checkpoint we resume from is lost.
            prev = self.allocations[-1]
            # it got at least as far as the checkpoint we resume from (a kill may have cut the
            # heartbeat that recorded it): so train - lost always adds up to the resumed elapsed
            prev.elapsed_last_s = max(prev.elapsed_last_s, resumed_elapsed_s)
            # After an extension that restarts the decay (``newest_elapsed_s``: the newest checkpoint,
            # beyond the one resumed), the work up to the newest checkpoint is abandoned, not lost.
            kept = max(resumed_elapsed_s, newest_elapsed_s or 0.0)
            prev.lost_s += max(0.0, prev.elapsed_last_s - kept)
        if job_id is None:
            job_id = runenv.job_id() or f"pid-{os.getpid()}"
        if restart_count is None:  # SLURM counts requeues; elsewhere count the run's earlier allocations
            restart_count = runenv.restart_count()
            if restart_count is None:
                restart_count = len(self.allocations)
        alloc = Allocation(
            job_id=job_id, restart_count=restart_count,
            hosts=hosts or runenv.hosts(),
            start_wall=start_wall if start_wall is not None else time.time(),
            startup_s=startup_s, elapsed_begin_s=resumed_elapsed_s, elapsed_last_s=resumed_elapsed_s,
            elapsed_saved_s=resumed_elapsed_s, step_begin=step, step_last=step, world_size=world_size)
        self.allocations.append(alloc)
        self.save()
        return alloc

    def record_budget_change(self, change: dict) -> None:
        """The budget moves to ``change["new_budget_s"]``; a repeat (a crash before training) is kept once."""
        self.budget_s = float(change["new_budget_s"])
        last = self.budget_changes[-1] if self.budget_changes else {}
        if (last.get("from_tag"), last.get("new_budget_s")) != (change.get("from_tag"), change["new_budget_s"]):
            self.budget_changes.append(change)

    def heartbeat(self, clock: BudgetClock, step: int, saved: bool = False, saved_elapsed_s: float | None = None,
                  decay_start_tag: str | None = None) -> None:
        """``saved``: a checkpoint reached disk, at ``saved_elapsed_s`` (a background save) or now;
        ``decay_start_tag``: --curve wsd, that checkpoint is where the decay begins."""
        a = self.current
        phases = clock.phase_totals()
        a.train_s, a.validation_s, a.checkpoint_s = phases["train"], phases["validation"], phases["checkpoint"]
        a.elapsed_last_s = clock.elapsed()
        a.step_last = step
        if saved:
            a.elapsed_saved_s = a.elapsed_last_s if saved_elapsed_s is None else saved_elapsed_s
        if decay_start_tag:
            self.decay_start_checkpoints.append({"tag": decay_start_tag, "step": step, "elapsed_s": a.elapsed_last_s,
                                                 "budget_s": self.budget_s})
        a.end_wall = time.time()
        self.save()

    def mark_cancelled(self) -> None:
        """``submit --cancel`` ended the current allocation (its trainer stopped on the cancel's
        signal and saved): record the cancel, not the signal, unless training already finished."""
        a = self.current
        if a.end_reason is None or not EndReason(a.end_reason).finished:
            a.end_reason = EndReason.CANCELLED
            a.end_wall = a.end_wall or time.time()
            self.save()

    def end_allocation(self, clock: BudgetClock, step: int, reason: str) -> None:
        reason = EndReason(reason)
        self.heartbeat(clock, step)
        self.current.end_reason = reason
        self.save()

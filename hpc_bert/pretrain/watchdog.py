"""The hang watchdog: a rank that stops making progress ends the allocation instead of burning it.

Three standard mechanisms, re-armed at every optimizer-step boundary, no thread of our own:
  - ``faulthandler.dump_traceback_later``: when no step completes within the timeout, the
    interpreter's own C watchdog writes every thread's Python stack to
    RUN_DIR/hang_stacks/rank_<r>.<job>.txt (it needs neither the GIL nor the main thread,
    so it also works when a rank is stuck inside a C call);
  - torch.distributed's process-group timeout, set a margin later: the ranks that still run
    are waiting in a collective for the hung one, their collective fails, and the loop ends
    the allocation with ``EndReason.HANG`` (the requeue status) and writes the ledger
    (rank 0), so the next allocation resumes from the newest checkpoint;
  - an interval timer (SIGALRM) at the same time, whose handler raises ``HangDetected`` in
    the main thread when it hangs in Python (a lock, a queue, a sleep: a single rank has no
    collective to time out).
A rank stopped outright (SIGSTOP, a dead node's process) writes nothing; its peers do.

The timeout: ``--hang_timeout_s`` when set, else ``AUTO_MULTIPLE`` x the slowest step seen,
at least ``AUTO_FLOOR_S``. Validations and checkpoint saves are not steps: while one runs the
allowance is the larger of the step timeout, ``PHASE_MULTIPLE`` x the slowest such phase seen,
and ``PHASE_FLOOR_S``, so neither trips it.
"""
from __future__ import annotations

import contextlib
import datetime
import faulthandler
import os
import signal
import time
from typing import Iterator

import torch.distributed as dist

from hpc_bert.layout import HANG_STACKS_DIR

AUTO_FLOOR_S = 600.0    # NCCL's own default; a step of a large model on a busy node stays far below
AUTO_MULTIPLE = 20.0
PHASE_FLOOR_S = 1800.0  # a first validation or save of an unmeasured size: gloo's default
PHASE_MULTIPLE = 5.0
PG_MARGIN_S = 5.0       # the stacks are written before the collective gives up


class HangDetected(RuntimeError):
    """Raised in the main thread by the watchdog's alarm: no step completed in time."""


def stacks_path(run_dir: str, rank: int, job: str) -> str:
    return os.path.join(run_dir, HANG_STACKS_DIR, f"rank_{rank}.{job}.txt")


class HangWatchdog:
    """Arm at every step boundary (``step_boundary``); wrap validations and saves in ``phase``."""

    def __init__(self, run_dir: str, rank: int, job: str, timeout_s: float = 0.0):
        self.explicit_s = float(timeout_s)
        self.slowest_step_s = 0.0
        self.slowest_phase_s: dict[str, float] = {}
        self.path = stacks_path(run_dir, rank, job)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._file = open(self.path, "w")  # faulthandler writes to its descriptor, from C
        self.armed_s = 0.0
        self.deadline = float("inf")
        self._pg_timeout_s = None
        self._disarmed = False
        self._previous_alarm = signal.signal(signal.SIGALRM, self._alarm)

    def step_timeout(self) -> float:
        if self.explicit_s > 0:
            return self.explicit_s
        return max(AUTO_FLOOR_S, AUTO_MULTIPLE * self.slowest_step_s)

    def step_boundary(self, step_s: float) -> None:
        """A step just completed (``step_s`` long; 0 before the first): re-arm for the next one."""
        self.slowest_step_s = max(self.slowest_step_s, step_s)
        self._arm(self.step_timeout())

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """A validation or a save: a longer allowance, measured for next time; re-armed after."""
        allowance = max(self.step_timeout(), PHASE_MULTIPLE * self.slowest_phase_s.get(name, 0.0),
                        PHASE_FLOOR_S if name not in self.slowest_phase_s else 0.0)
        self._arm(allowance)
        t0 = time.monotonic()
        yield
        self.slowest_phase_s[name] = max(self.slowest_phase_s.get(name, 0.0), time.monotonic() - t0)
        self._arm(self.step_timeout())

    def _alarm(self, _signum, _frame):
        if self._disarmed:
            return  # delivered while the allocation already ends
        raise HangDetected(f"the hang watchdog's alarm: no step for {self.armed_s:.0f} s")

    def _arm(self, seconds: float) -> None:
        faulthandler.dump_traceback_later(seconds, repeat=False, file=self._file, exit=False)
        self.armed_s, self.deadline = seconds, time.monotonic() + seconds
        pg_s = seconds + PG_MARGIN_S
        signal.setitimer(signal.ITIMER_REAL, pg_s)
        if pg_s != self._pg_timeout_s and dist.is_initialized() and dist.get_world_size() > 1:
            dist.distributed_c10d._set_pg_timeout(datetime.timedelta(seconds=pg_s))
            self._pg_timeout_s = pg_s

    def expired(self) -> bool:
        """The timeout passed: a collective that failed now failed because a rank hung."""
        return time.monotonic() >= self.deadline

    def disarm(self) -> None:
        """The allocation ends: no stacks, no alarm from here on (its end must not be interrupted)."""
        self._disarmed = True
        faulthandler.cancel_dump_traceback_later()
        signal.setitimer(signal.ITIMER_REAL, 0)

    def close(self) -> None:
        """Disarm; an empty stacks file (no hang) is removed."""
        self.disarm()
        signal.signal(signal.SIGALRM, self._previous_alarm)
        self._file.close()
        with contextlib.suppress(OSError):
            if os.path.getsize(self.path) == 0:
                os.unlink(self.path)
                os.rmdir(os.path.dirname(self.path))  # only when no other rank's stacks are in it

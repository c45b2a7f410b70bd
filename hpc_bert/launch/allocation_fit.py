"""Does an allocation fit what the run needs: a start, some training and a checkpoint save
before the time limit, and a save within the preemption grace time.

``submit`` checks both before it submits anything, from the run dir's measurements (the
ledger's startups, metrics.jsonl's saves) or, before any, from estimates.
"""
from __future__ import annotations

import math
import os

from hpc_bert.errors import UserError
from hpc_bert.pretrain.clock import Ledger

STARTUP_GUESS_S = 20.0  # imports to first step of a small model, until the ledger measured one
MIN_TRAIN_S = 30.0  # an allocation must train at least this long to be worth its startup


def measured_startup_seconds(run_dir: str) -> float:
    """The slowest start of an allocation of this run (imports to first step), else a guess."""
    ledger = Ledger.load(run_dir) if os.path.isdir(run_dir) else None
    return max((a.startup_s for a in ledger.allocations), default=STARTUP_GUESS_S) if ledger else STARTUP_GUESS_S


def check_allocation_long_enough(allocation_hours: float, save_s: float, startup_s: float) -> None:
    """Refuse an allocation that cannot start, train a little and save before it ends: it would
    be requeued over and over without progress."""
    needed_s = startup_s + MIN_TRAIN_S + 2 * save_s
    if allocation_hours * 3600 < needed_s:
        hours = math.ceil(needed_s / 3.6) / 1000
        raise UserError(f"--allocation_hours {allocation_hours:g} ({allocation_hours * 3600:.0f} s) is too short to "
                        f"start (~{startup_s:.0f} s), train ({MIN_TRAIN_S:.0f} s) and save a checkpoint (~{save_s:.1f} s, "
                        f"twice): pass --allocation_hours {hours:g} or more")



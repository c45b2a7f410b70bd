"""Sizing allocations to what the run needs: a start, some training and a checkpoint save before
the time limit (the time-limit signal's lead, how many allocations a budget takes), and a save
within the preemption grace time.

``submit`` checks both before it submits anything, from the run dir's measurements (the
ledger's startups, metrics.jsonl's saves) or, before any, from estimates.
"""
from __future__ import annotations

import math
import os

from hpc_bert.config.pretrain import PretrainConfig
from hpc_bert.errors import UserError
from hpc_bert.pretrain.clock import Ledger
from hpc_bert.pretrain.events import read_events

# Seconds of an allocation lost besides the signal lead: SLURM sends the time-limit signal up to
# ~30 s early and a job needs ~60 s to start; a local job starts in ~20 s and is signalled on time.
ALLOCATION_OVERHEAD_S = {"slurm": 90.0, "local": 20.0}
SAVE_BYTES_PER_S = 200e6  # assumed checkpoint write speed until a save was measured
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




def grace_note(grace_s: float | None, save_s: float, checkpoint_every_minutes: float) -> str | None:
    """One line when a preemption's grace time cannot hold a checkpoint save (the trainer then
    stops without one and the periodic saves bound the loss); None when it fits or is unknown."""
    if grace_s is None or 1.5 * save_s + 2.0 <= grace_s:
        return None
    return (f"note: the partition's preemption grace time is {grace_s:g} s but a checkpoint save takes ~{save_s:.1f} s: "
            f"a preempted allocation stops without saving and loses up to --checkpoint_every_minutes "
            f"{checkpoint_every_minutes:g} min of training")


def signal_delay_seconds(signal_delay_s: int, allocation_hours: float, cluster: str, save_s: float) -> int:
    """The time-limit signal's lead (``signal_delay_s`` when set): room for one checkpoint save (3x
    the measured or estimated save, plus 30 s), but at most a tenth of a short allocation, which
    must train at all."""
    delay = signal_delay_s or int(max(60 if cluster == "slurm" else 10, 3 * save_s + 30))
    return int(min(delay, allocation_hours * 3600 / 10))


def allocations_needed(budget_hours: float, allocation_hours: float, signal_delay_s: float, cluster: str) -> int:
    """Allocations the budget needs: each loses the signal lead and the cluster's overhead
    (at least a fifth of it is assumed to train)."""
    alloc_s = allocation_hours * 3600
    useful_s = max(0.2 * alloc_s, alloc_s - signal_delay_s - ALLOCATION_OVERHEAD_S[cluster])
    return math.ceil(budget_hours * 3600 / useful_s)


def measured_save_seconds(run_dir: str) -> float | None:
    if not os.path.isdir(run_dir):
        return None
    saves = [e.get("seconds", 0) for e in read_events(run_dir) if e["event"] == "checkpoint"]
    return max(saves) if saves else None


def estimated_save_seconds(cfg: PretrainConfig) -> float:
    """Before any save was measured: one checkpoint of the model's real parameter count (built
    on the meta device, with the tokenizer's vocab) written at SAVE_BYTES_PER_S."""
    from hpc_bert.data.tokenizer import load_tokenizer
    from hpc_bert.model.bert import model_vocab_size, parameter_count
    from hpc_bert.pretrain.checkpoint import checkpoint_bytes
    vocab_size = cfg.model.vocab_size or model_vocab_size(cfg.model, len(load_tokenizer(cfg.model.tokenizer_name)))
    return checkpoint_bytes(parameter_count(cfg.model, vocab_size)) / SAVE_BYTES_PER_S

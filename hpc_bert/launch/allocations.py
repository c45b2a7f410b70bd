"""How a budget is cut into allocations: each must fit a start, some training and a checkpoint save
before its time limit (the time-limit signal's lead, how many allocations a budget takes), and a
save should fit the partition's preemption grace time.

``submit`` checks all of it before it submits anything, from the run dir's measurements (the
ledger's startups, metrics.jsonl's saves) or, before any, from estimates.
"""
from __future__ import annotations

import math
import os

from hpc_bert.config.pretrain import PretrainConfig
from hpc_bert.errors import UserError
from hpc_bert.launch import queue
from hpc_bert.layout import read_events
from hpc_bert.pretrain.clock import Ledger

LOCAL_MAX_ALLOCATIONS = 6  # submitit's LocalExecutor relaunches a job at most 6 times (its max_retry)
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
    """The time-limit signal's lead: room for one checkpoint save (3x the measured or estimated
    save, plus 30 s), but at most a tenth of a short allocation, which must train at all."""
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


def model_parameters(cfg: PretrainConfig) -> int:
    """The model's real parameter count (built on the meta device, with the tokenizer's vocab)."""
    # torch loads here, only when a run must be sized: `submit --help` and --cancel stay light
    from hpc_bert.data.tokenizer import load_tokenizer
    from hpc_bert.model.bert import model_vocab_size, parameter_count
    vocab_size = cfg.model.vocab_size or model_vocab_size(cfg.model, len(load_tokenizer(cfg.model.tokenizer_name)))
    return parameter_count(cfg.model, vocab_size)


def estimated_save_seconds(cfg: PretrainConfig) -> float:
    """Before any save was measured: one checkpoint of the model's real size written at SAVE_BYTES_PER_S."""
    from hpc_bert.pretrain.checkpoint import checkpoint_bytes  # torch: see model_parameters
    return checkpoint_bytes(model_parameters(cfg)) / SAVE_BYTES_PER_S


def allocation_plan(sub, cfg: PretrainConfig, cluster: str) -> tuple[int, int, float | None]:
    """(signal lead in seconds, allocations the budget needs, the partition's grace time or None)
    for submit's flags ``sub``; refuses an allocation too short to progress and a local chain that
    needs more allocations than the local executor runs."""
    run_dir = cfg.checkpoint.output_dir
    save_s = measured_save_seconds(run_dir)
    save_s = save_s if save_s is not None else estimated_save_seconds(cfg)
    check_allocation_long_enough(sub.allocation_hours, save_s, measured_startup_seconds(run_dir))
    grace_s = queue.partition_grace_s(sub.partition) if cluster == "slurm" and queue.slurm_available() else None
    if note := grace_note(grace_s, save_s, cfg.checkpoint.checkpoint_every_minutes):
        print(f"hpc_bert: {note}", flush=True)
    delay = signal_delay_seconds(sub.signal_delay_s, sub.allocation_hours, cluster, save_s)
    needed = allocations_needed(sub.budget, sub.allocation_hours, delay, cluster)
    if cluster == "local" and needed > LOCAL_MAX_ALLOCATIONS:
        # the smallest allocation that fits: its signal lead is at most a tenth of it
        hours = (sub.budget * 3600 / LOCAL_MAX_ALLOCATIONS + ALLOCATION_OVERHEAD_S["local"]) / 0.9 / 3600
        raise UserError(f"--budget {sub.budget:g} h needs about {needed} allocations of {sub.allocation_hours:g} h, "
                        f"but --cluster local runs at most {LOCAL_MAX_ALLOCATIONS}: pass --allocation_hours "
                        f"{math.ceil(hours * 1000) / 1000:g} or more")
    return delay, needed, grace_s

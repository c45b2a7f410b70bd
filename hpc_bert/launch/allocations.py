"""How a budget is cut into allocations: the time-limit signal's lead (room for one checkpoint
save, measured or estimated) and how many allocations the budget needs on each kind of cluster."""
from __future__ import annotations

import math
import os

from hpc_bert.config.pretrain import PretrainConfig
from hpc_bert.errors import UserError
from hpc_bert.layout import read_events

LOCAL_MAX_ALLOCATIONS = 6  # submitit's LocalExecutor relaunches a job at most 6 times (its max_retry)
# Seconds of an allocation lost besides the signal lead: SLURM sends the time-limit signal up to
# ~30 s early and a job needs ~60 s to start; a local job starts in ~20 s and is signalled on time.
ALLOCATION_OVERHEAD_S = {"slurm": 90.0, "local": 20.0}
SAVE_BYTES_PER_S = 200e6  # assumed checkpoint write speed until a save was measured


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


def estimated_save_seconds(cfg: PretrainConfig) -> float:
    """Before any save was measured: one checkpoint of the model's real parameter count (built
    on the meta device, with the tokenizer's vocab) written at SAVE_BYTES_PER_S."""
    # torch loads here, only when a save must be estimated: `submit --help` and --cancel stay light
    from hpc_bert.data.tokenizer import load_tokenizer
    from hpc_bert.model.bert import model_vocab_size, parameter_count
    from hpc_bert.pretrain.checkpoint import checkpoint_bytes
    vocab_size = cfg.model.vocab_size or model_vocab_size(cfg.model, len(load_tokenizer(cfg.model.tokenizer_name)))
    return checkpoint_bytes(parameter_count(cfg.model, vocab_size)) / SAVE_BYTES_PER_S


def allocation_plan(budget: float, allocation_hours: float, signal_delay_s: int, cfg: PretrainConfig,
                    cluster: str) -> tuple[int, int]:
    """(signal lead in seconds, allocations the budget needs); refuses a local chain that needs too many."""
    # The time-limit signal must leave room for one checkpoint save, measured when we can.
    save_s = 0.0 if signal_delay_s else measured_save_seconds(cfg.checkpoint.output_dir)
    delay = signal_delay_seconds(signal_delay_s, allocation_hours, cluster, save_s if save_s is not None else estimated_save_seconds(cfg))
    needed = allocations_needed(budget, allocation_hours, delay, cluster)
    if cluster == "local" and needed > LOCAL_MAX_ALLOCATIONS:
        # the smallest allocation that fits: its signal lead is at most a tenth of it
        hours = (budget * 3600 / LOCAL_MAX_ALLOCATIONS + ALLOCATION_OVERHEAD_S["local"]) / 0.9 / 3600
        raise UserError(f"--budget {budget:g} h needs about {needed} allocations of {allocation_hours:g} h, "
                        f"but --cluster local runs at most {LOCAL_MAX_ALLOCATIONS}: pass --allocation_hours "
                        f"{math.ceil(hours * 1000) / 1000:g} or more")
    return delay, needed

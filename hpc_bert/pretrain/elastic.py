"""Resuming on another world size: what may change between allocations, and what follows from it.

The global batch (``--train_batch_size``) is fixed for a run; the world size is not. Gradient
accumulation is re-derived from it at every start, the data order does not depend on it (see
hpc_bert.data.loader), and the schedule runs on budget progress, so validations, markers, LR and
early exit happen at the same progress whatever the world-size history. Per-rank RNG streams
(dropout) cannot be carried over to another number of ranks: on a change, every rank draws a
fresh stream from (seed, rank, step), which is deterministic but not the uninterrupted run's.
"""
from __future__ import annotations

import random

import numpy as np
import torch

from hpc_bert.config.pretrain import check_batch_divisible
from hpc_bert.errors import UserError


def world_sizes_for(train_batch_size: int, micro_batch_size: int) -> list[int]:
    """Every world size that splits the global batch into whole micro batches per rank."""
    per_rank = train_batch_size // micro_batch_size if train_batch_size % micro_batch_size == 0 else 0
    return [w for w in range(1, per_rank + 1) if per_rank % w == 0]


def accumulation_steps(train_batch_size: int, micro_batch_size: int, world_size: int) -> int:
    """Micro batches per rank and optimizer step, so that the global batch stays ``train_batch_size``."""
    check_batch_divisible(train_batch_size, micro_batch_size)
    if train_batch_size % (micro_batch_size * world_size) == 0:
        return train_batch_size // (micro_batch_size * world_size)
    sizes = world_sizes_for(train_batch_size, micro_batch_size)
    raise UserError(f"--train_batch_size {train_batch_size} is not a multiple of micro batch x world size = "
                    f"{micro_batch_size} x {world_size}: with micro batch {micro_batch_size} run on "
                    f"{', '.join(map(str, sizes))} ranks, or change --train_micro_batch_size_per_gpu")


def fresh_rng_state(seed: int, rank: int, step: int) -> None:
    """Seed python, numpy and torch for ``rank`` after a world-size change (see the module docstring)."""
    key = np.random.SeedSequence([seed, rank, step, 0xE1A5]).generate_state(2)
    random.seed(int(key[0]))
    np.random.seed(int(key[1]))
    torch.manual_seed(int(key[0]) << 32 | int(key[1]))
    if torch.cuda.is_available():
        torch.cuda.manual_seed(int(key[1]))

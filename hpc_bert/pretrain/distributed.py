"""Process-group setup and the stop flag: all the trainer knows about its environment.

Rank, world size and master address come from hpc_bert/runenv.py (torchrun's variables, or
SLURM's for srun tasks). The trainer sees no other SLURM detail: a stop flag set by signals,
and an optional allocation deadline (runenv.allocation_end) that the launcher exports.
"""
from __future__ import annotations

import os
import signal
import time
from enum import IntEnum

import torch
import torch.distributed as dist

from hpc_bert.runenv import DistEnv, resolve_host
from hpc_bert.end_reason import EndReason


def init_distributed(denv: DistEnv) -> str:
    """Start the process group (DeepSpeed's comm wrapper); returns the device string."""
    os.environ.update(RANK=str(denv.rank), WORLD_SIZE=str(denv.world_size), LOCAL_RANK=str(denv.local_rank),
                      MASTER_ADDR=resolve_host(denv.master_addr), MASTER_PORT=str(denv.master_port))
    import deepspeed
    if torch.cuda.is_available():
        torch.cuda.set_device(denv.local_rank % torch.cuda.device_count())
        backend, device = "nccl", f"cuda:{torch.cuda.current_device()}"
    else:
        backend, device = "gloo", "cpu"
        # DeepSpeed's CPU backend JIT-compiles a shared-memory op (~50 s on a fresh machine)
        # that only its inference all-reduce uses; training all-reduces go through gloo.
        # Its table of compatible ops is meant to be edited; marking the op off skips the build.
        import deepspeed.ops
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)
    return device


def all_reduce(t: torch.Tensor, op) -> torch.Tensor:
    """In place over all ranks; a no-op alone. Every collective of the loop goes through here."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=op)
    return t


def all_agree_max(values: list[float], device: str) -> list[float]:
    """Element-wise max over ranks (one all-reduce, one host read)."""
    return all_reduce(torch.tensor(values, dtype=torch.float64, device=device), dist.ReduceOp.MAX).tolist()


def all_sum(values: list[float], device: str) -> list[float]:
    return all_reduce(torch.tensor(values, dtype=torch.float64, device=device), dist.ReduceOp.SUM).tolist()


def agree_step(stop_code: int, elapsed_s: float, loss_sum: torch.Tensor | None, device: str) -> tuple[int, float, bool]:
    """The step boundary's one all-reduce: max over ranks of (stop code, elapsed, loss non-finite).

    ``loss_sum`` is the step's loss still on the device; only its finiteness travels, so the
    loss itself is never read here. Returns (stop code, elapsed seconds, non-finite) as every
    rank sees them.
    """
    t = torch.tensor([float(stop_code), elapsed_s, 0.0], dtype=torch.float64, device=device)
    if loss_sum is not None:
        t[2] = (~torch.isfinite(loss_sum)).to(torch.float64)
    code, elapsed, nonfinite = all_reduce(t, dist.ReduceOp.MAX).tolist()
    return int(code), elapsed, nonfinite > 0


# what gloo says when the process at the other end of a collective died (NCCL raises DistError)
PEER_FAILURES = ("Connection closed by peer", "Connection reset by peer", "Broken pipe")


def peer_lost(e: BaseException, world_size: int) -> bool:
    """``e`` says that another rank of a multi-rank run is gone (its process or node died)."""
    return world_size > 1 and (isinstance(e, dist.DistError) or any(s in str(e) for s in PEER_FAILURES))


def shutdown() -> None:
    """End the process group before the interpreter exits: left to exit-time destructors, gloo's
    worker threads can be torn down while joinable and abort the process (exit -6) after a
    finished run. Local; every rank calls it after the last collective."""
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


class StopCode(IntEnum):
    """What a rank asks for at the next step boundary; ranks agree on the max, so a larger
    code wins (the allocation deadline over SIGUSR2 over SIGTERM over SIGINT)."""
    NONE = 0
    SIGNAL = 1     # SIGINT
    PREEMPTED = 2  # SIGTERM
    TIMEOUT = 3    # SIGUSR2, SLURM's warning before the time limit
    DEADLINE = 4   # the allocation end (HPC_BERT_ALLOCATION_END) is closer than a save

    @property
    def reason(self) -> EndReason | None:
        """The end reason this code stops an allocation with."""
        return _CODE_REASONS[self]

    @property
    def cause(self) -> str:
        return _CODE_CAUSES[self]


_CODE_REASONS = {StopCode.NONE: None, StopCode.SIGNAL: EndReason.SIGNAL, StopCode.PREEMPTED: EndReason.PREEMPTED,
                 StopCode.TIMEOUT: EndReason.TIMEOUT, StopCode.DEADLINE: EndReason.TIMEOUT}
_CODE_CAUSES = {StopCode.NONE: "no signal", StopCode.SIGNAL: "SIGINT", StopCode.PREEMPTED: "SIGTERM",
                StopCode.TIMEOUT: "SIGUSR2", StopCode.DEADLINE: "allocation deadline"}
SIGNAL_CODES = {signal.SIGINT: StopCode.SIGNAL, signal.SIGTERM: StopCode.PREEMPTED, signal.SIGUSR2: StopCode.TIMEOUT}
SIGNAL_REASONS = {signum: code.reason for signum, code in SIGNAL_CODES.items()}  # the launcher reads these


class StopFlag:
    """Signals only record that a stop was asked for; the training loop acts on it.

    A DeepSpeed save is collective, so saving from one rank's handler would deadlock; the
    loop instead agrees on the flag at the next step boundary and saves on every rank.
    A second signal while saving only sets the flag again.
    """

    def __init__(self):
        self.code = StopCode.NONE
        self.preempted_at: float | None = None  # monotonic time of the first SIGTERM: the grace time runs
        self._previous = {}

    def _handle(self, signum, _frame):
        self.code = max(self.code, SIGNAL_CODES[signum])
        if signum == signal.SIGTERM and self.preempted_at is None:
            self.preempted_at = time.monotonic()

    def install(self) -> "StopFlag":
        for s in SIGNAL_CODES:
            self._previous[s] = signal.signal(s, self._handle)
        return self

    def uninstall(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)

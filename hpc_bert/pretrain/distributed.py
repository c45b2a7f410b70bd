"""Process-group setup and the stop flag: all the trainer knows about its environment.

Rank, world size and master address come from hpc_bert/runenv.py (torchrun's variables, or
SLURM's for srun tasks). The trainer sees no other SLURM detail: a stop flag set by signals,
and an optional allocation deadline (runenv.allocation_end) that the launcher exports.
"""
from __future__ import annotations

import os
import signal

import torch
import torch.distributed as dist

# The rank layout, the master address and port, and the deadline are run-environment facts.
from hpc_bert.runenv import DEADLINE_ENV, DistEnv, allocation_end, resolve_host  # noqa: F401 (re-exported)
from hpc_bert.runenv import dist_env as detect_env

SIGNAL_REASONS = {signal.SIGUSR2: "timeout", signal.SIGTERM: "preempted", signal.SIGINT: "signal"}


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


def all_agree_max(values: list[float], device: str) -> list[float]:
    """Element-wise max over ranks: the stop flag and the clock every rank acts on."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def all_sum(values: list[float], device: str) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def shutdown() -> None:
    """End the process group before the interpreter exits: left to exit-time destructors, gloo's
    worker threads can be torn down while joinable and abort the process (exit -6) after a
    finished run. Local; every rank calls it after the last collective."""
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


class StopFlag:
    """Signals only record that a stop was asked for; the training loop acts on it.

    A DeepSpeed save is collective, so saving from one rank's handler would deadlock; the
    loop instead agrees on the flag at the next step boundary and saves on every rank.
    A second signal while saving only sets the flag again.
    """

    CODES = {0: None, 1: "signal", 2: "preempted", 3: "timeout"}

    def __init__(self):
        self.code = 0
        self.signum: int | None = None
        self._previous = {}

    def _handle(self, signum, _frame):
        self.signum = signum
        self.code = max(self.code, {"signal": 1, "preempted": 2, "timeout": 3}[SIGNAL_REASONS[signum]])

    def install(self) -> "StopFlag":
        for s in SIGNAL_REASONS:
            self._previous[s] = signal.signal(s, self._handle)
        return self

    def uninstall(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)

    def describe(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "no signal"

    @staticmethod
    def reason(code: float) -> str | None:
        return StopFlag.CODES[int(code)]

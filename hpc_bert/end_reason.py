"""Why an allocation of a pretraining run ended: the one vocabulary of end reasons.

The ledger, metrics.jsonl, the step decision, the stop codes and the exit status all use
these members. ``EndReason`` is a ``str`` enum, so a member is written to JSON as its plain
value and the files stay what they were. Each member says whether the run is finished and
which exit status the trainer returns, so the scheduler knows whether to requeue.
"""
from __future__ import annotations

from enum import Enum

from hpc_bert.errors import EXIT_REQUEUE


class EndReason(str, Enum):
    BUDGET_DONE = "budget_done"  # the training-time budget is spent
    EARLY_EXIT = "early_exit"    # --early_exit_time_marker reached
    EARLY_STOP = "early_stop"    # the validation loss rule ended training
    TIMEOUT = "timeout"          # SLURM's warning signal or the allocation's own deadline
    PREEMPTED = "preempted"      # SIGTERM
    SIGNAL = "signal"            # SIGINT
    CRASH = "crash"              # the allocation died without ending its ledger record
    ERROR = "error"              # a non-finite loss: nothing saved, the run fails
    CANCELLED = "cancelled"      # submit --cancel: saved, the job ends; the same submit command continues
    HANG = "hang"                # no optimizer step within --hang_timeout_s: a rank hung (stacks in the run dir)
    DISK_FULL = "disk_full"      # a checkpoint, ledger or metrics write failed for lack of space (or EIO)

    def __str__(self) -> str:
        return self.value

    @property
    def finished(self) -> bool:
        """Training is over: the final checkpoint is written and nothing is requeued."""
        return self in _FINISHED

    @property
    def exit_status(self) -> int:
        """0 when finished or cancelled (the job ends, nothing is requeued), 1 on error, else
        EXIT_REQUEUE so the scheduler requeues the job."""
        if self is EndReason.ERROR:
            return 1
        return 0 if self.finished or self is EndReason.CANCELLED else EXIT_REQUEUE


_FINISHED = frozenset({EndReason.BUDGET_DONE, EndReason.EARLY_EXIT, EndReason.EARLY_STOP})

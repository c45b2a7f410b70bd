"""Fault injection for tests and benchmarks: real signals at chosen points of a run.

``HPC_BERT_FAULTS="usr2@step:7,usr2@validation:2,term@marker:1,kill@step:12"`` makes the
process send itself that signal when it reaches the point: after optimizer step N, in the
middle of the validation at epoch N, right after saving fine-tune marker number N (1-based),
in the middle of saving the training checkpoint of step N (files written, not yet renamed).
The signal goes through the same handlers as one from SLURM; ``kill`` is SIGKILL, a crash.
Each fault fires at most once per process. Unset, this costs one dict lookup per event.
"""
from __future__ import annotations

import os
import signal

ENV = "HPC_BERT_FAULTS"
SIGNALS = {"usr2": signal.SIGUSR2, "term": signal.SIGTERM, "int": signal.SIGINT, "kill": signal.SIGKILL}


def _parse(spec: str) -> dict[tuple[str, int], int]:
    out = {}
    for item in filter(None, (x.strip() for x in spec.split(","))):
        sig, point = item.split("@")
        where, n = point.split(":")
        out[(where, int(n))] = SIGNALS[sig]
    return out


_PENDING = _parse(os.environ.get(ENV, ""))


def at(where: str, n: int) -> None:
    sig = _PENDING.pop((where, n), None)
    if sig is not None and int(os.environ.get("RANK", "0")) == 0:
        os.kill(os.getpid(), sig)

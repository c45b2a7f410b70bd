"""Fault injection for tests and benchmarks: real signals at chosen points of a run.

``HPC_BERT_FAULTS="usr2@step:7,usr2@validation:2,term@marker:1,kill@step:12"`` makes the
process send itself that signal when it reaches the point: after optimizer step N, in the
middle of the validation at epoch N, right after saving fine-tune marker number N (1-based),
in the middle of saving the training checkpoint of step N (files written, not yet renamed),
in the middle of the N-th ledger write of this process (temp file written, not yet renamed).
Naming a point twice (``term@step:5,term@step:5``) sends the signals back to back, as a
scheduler that repeats itself does. The signal goes through the same handlers as one from
SLURM; ``kill`` is SIGKILL, a crash. Each point fires at most once per process. Unset, this
costs one dict lookup per event.
"""
from __future__ import annotations

import os
import signal

ENV = "HPC_BERT_FAULTS"
SIGNALS = {"usr2": signal.SIGUSR2, "term": signal.SIGTERM, "int": signal.SIGINT, "kill": signal.SIGKILL}
POINTS = ("step", "validation", "marker", "save", "ledger")


def _parse(spec: str) -> dict[tuple[str, int], list[int]]:
    out: dict[tuple[str, int], list[int]] = {}
    for item in filter(None, (x.strip() for x in spec.split(","))):
        sig, point = item.split("@")
        where, n = point.split(":")
        if where not in POINTS or sig not in SIGNALS:
            raise ValueError(f"{ENV}: unknown fault {item!r} (signals {sorted(SIGNALS)}, points {POINTS})")
        out.setdefault((where, int(n)), []).append(SIGNALS[sig])
    return out


_PENDING = _parse(os.environ.get(ENV, ""))


def at(where: str, n: int) -> None:
    signals = _PENDING.pop((where, n), None)
    if signals and int(os.environ.get("RANK", "0")) == 0:
        for sig in signals:
            os.kill(os.getpid(), sig)

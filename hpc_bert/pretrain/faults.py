"""Fault injection for tests and benchmarks: real signals at chosen points of a run.

``HPC_BERT_FAULTS="usr2@step:7,usr2@validation:2,term@marker:1,kill@step:12"`` makes the
process send itself that signal when it reaches the point: after optimizer step N, in the
middle of the validation at epoch N, right after saving fine-tune marker number N (1-based),
in the middle of saving the training checkpoint of step N (files written, not yet renamed),
in the middle of the N-th ledger write of this process (temp file written, not yet renamed).
Naming a point twice (``term@step:5,term@step:5``) sends the signals back to back, as a
scheduler that repeats itself does. The signal goes through the same handlers as one from
SLURM; ``kill`` is SIGKILL, a crash; ``stop`` is SIGSTOP, a rank frozen outright. Two faults
are not signals: ``hang`` blocks the process there for good (a deadlock the hang watchdog must
end), ``enospc`` raises "No space left on device" there (a disk that fills mid-write). Each
point fires at most once per process, on rank ``HPC_BERT_FAULTS_RANK`` (default 0). Unset,
this costs one dict lookup per event.
"""
from __future__ import annotations

import errno
import os
import signal
import threading

ENV = "HPC_BERT_FAULTS"
RANK_ENV = "HPC_BERT_FAULTS_RANK"
HANG, ENOSPC = "hang", "enospc"
SIGNALS = {"usr2": signal.SIGUSR2, "term": signal.SIGTERM, "int": signal.SIGINT, "kill": signal.SIGKILL,
           "stop": signal.SIGSTOP, HANG: HANG, ENOSPC: ENOSPC}
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
    if signals and os.environ.get("RANK", "0") == os.environ.get(RANK_ENV, "0"):
        for sig in signals:
            if sig == HANG:
                threading.Event().wait()  # forever; interruptible by the watchdog's alarm
            elif sig == ENOSPC:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            else:
                os.kill(os.getpid(), sig)

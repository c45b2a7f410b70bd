"""Progress of a data stage on stderr: MB of text done, MB/s, ETA (tqdm).

On a terminal the bar redraws every second; in a log file (a SLURM job's output) it writes
a line every 30 s instead of flooding the log.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator


class _Silent:
    def update(self, n: int) -> None:
        pass


@contextlib.contextmanager
def progress(total_bytes: int | None, what: str, enabled: bool = True) -> Iterator:
    """A bar counting bytes of text (``update(n)``); total None shows the rate without an ETA."""
    if not enabled:
        yield _Silent()
        return
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    with tqdm(total=total_bytes, desc=what, unit="B", unit_scale=True, unit_divisor=1000, file=sys.stderr,
              mininterval=1 if tty else 30, dynamic_ncols=tty, leave=True) as bar:
        yield bar

"""Worker processes for data preparation: an ordered map with a bounded window.

``ordered_map`` keeps at most ``2 x workers`` tasks in flight, so a stream of blocks is
consumed as fast as it is processed and memory stays bounded (``Pool.imap`` would read the
whole input ahead). Results come back in input order, so outputs do not depend on the
number of workers.
"""
from __future__ import annotations

import collections
import concurrent.futures
import multiprocessing
import os
from typing import Callable, Iterable, Iterator, TypeVar

from hpc_bert.errors import UserError

T = TypeVar("T")
R = TypeVar("R")


def _worker_init() -> None:
    # one task per core already: the tokenizer's Rust threads would only oversubscribe
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``map(fn, items)`` over ``workers`` processes (in this process when 1)."""
    if workers <= 1:
        yield from map(fn, items)
        return
    # spawn: no fork of a process that may hold Rust/BLAS threads
    ctx = multiprocessing.get_context("spawn")
    try:
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init) as pool:
            pending: collections.deque = collections.deque()
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
    except concurrent.futures.process.BrokenProcessPool:
        raise UserError("a data worker process died (out of memory, or a script read from stdin, which "
                        f"spawned workers cannot re-import): rerun with --num_workers 1 (was {workers})") from None

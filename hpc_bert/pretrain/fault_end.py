"""How an allocation ends on a fault it cannot train through: a hung rank, a full disk.

Both end the allocation with the requeue status, so the scheduler starts the next one, which
resumes from the newest complete checkpoint (the failed write, if any, never became one):
  - a hang: the hang watchdog (pretrain/watchdog.py) wrote every thread's stack; the ranks
    that still run saw their collective time out after it. No further collective is tried.
  - a full disk (ENOSPC, EDQUOT, EIO) during a checkpoint, ledger or metrics write: the
    partial checkpoint folder is removed (atomic writes leave the ledger and the previous
    checkpoint whole), and one line names the folder, the bytes a checkpoint needs and the
    bytes free.
The ledger records the end reason (rank 0, when it still can write); the next allocation
records the work since the last checkpoint as lost.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys

from hpc_bert.end_reason import EndReason
from hpc_bert.pretrain.checkpoint import checkpoint_bytes, checkpoints_dir, find_latest, remove_partials

DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO})
WRITER_JOIN_S = 30.0  # a background save still writing when the allocation ends is abandoned after this


def run_guarded(alloc) -> int:
    """``alloc.run()``, ending the allocation cleanly on a hang or a full disk."""
    try:
        return alloc.run()
    except OSError as e:
        if e.errno not in DISK_ERRNOS:
            raise
        alloc.watchdog.disarm()
        return end_abruptly(alloc, EndReason.DISK_FULL, disk_full_line(alloc, e))
    except RuntimeError as e:  # torch.distributed's errors (a collective timed out) are RuntimeErrors
        if not alloc.watchdog.expired():
            raise
        alloc.watchdog.disarm()  # the timed-out collective and the alarm come together: one ending
        return end_abruptly(alloc, EndReason.HANG, hang_line(alloc, e))
    finally:
        alloc.watchdog.close()


def folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def disk_full_line(alloc, e: OSError) -> str:
    run_dir = alloc.run_dir
    alloc.saver.abandon(WRITER_JOIN_S)
    if alloc.rank == 0:
        remove_partials(run_dir)
    latest = find_latest(run_dir)
    needed = folder_bytes(os.path.join(checkpoints_dir(run_dir), latest["tag"])) if latest \
        else checkpoint_bytes(alloc.n_params)
    folder = os.path.dirname(e.filename) if e.filename else run_dir
    free = shutil.disk_usage(run_dir).free
    kept = f"the previous checkpoint {latest['tag']}" if latest else "no checkpoint yet; the run starts over,"
    return (f"{folder}: {e.strerror or os.strerror(e.errno)} while writing {os.path.basename(e.filename or '') or 'a file'}: "
            f"a checkpoint needs {needed:,} bytes ({needed / 2**30:.2f} GiB), {free:,} bytes free; {kept} "
            f"and the ledger are intact: free {f'{needed - free:,} bytes or more' if needed > free else 'space'} "
            "(or raise the quota) and resubmit: training resumes from it")


def hang_line(alloc, e: RuntimeError) -> str:
    w = alloc.watchdog
    return (f"rank {alloc.rank}: no optimizer step completed for {w.armed_s:.0f} s after step {alloc.state.step} "
            f"(a rank hung; every running rank's stacks are in {os.path.dirname(w.path)}; "
            f"{str(e).splitlines()[0][:120]}): the allocation ends with the requeue status and the next one "
            "resumes from the newest checkpoint")


def end_abruptly(alloc, reason: EndReason, line: str) -> int:
    """Record the end without any collective (a peer may be gone) and return the exit status."""
    clock, state = alloc.clock, alloc.state
    with contextlib.suppress(OSError):  # a full disk may refuse these too: the next allocation says "crash"
        alloc.events.emit("allocation_end", state.step, clock.elapsed(), reason=reason, cause=line)
        if alloc.rank == 0:
            alloc.ledger.end_allocation(clock, state.step, reason)
    print(f"hpc_bert: {line}", file=sys.stderr, flush=True)
    with contextlib.suppress(OSError):
        alloc.events.close(0)
    alloc.stop.uninstall()
    return reason.exit_status

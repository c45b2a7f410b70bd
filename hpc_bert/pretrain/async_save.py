"""Periodic training checkpoints written in the background.

A periodic save blocks the step only for the copy of the state to host memory: DeepSpeed's
``save_checkpoint`` runs as usual (its barriers, its file names, its state dicts) but with a
checkpoint engine that keeps a host copy of each state dict instead of writing it
(``_HostCopy``). A background thread then writes those copies into the checkpoint's
``.partial`` folder, fsyncs them and drops a ``rank_<r>.written`` mark; rank 0's thread waits
for every rank's mark and publishes the checkpoint exactly as a blocking save does
(``checkpoint.publish_checkpoint``: meta.json, rename, latest.json, keep-k). So a checkpoint
is still complete only once fully written and marked, and the loader never sees a partial one;
a kill at any instant of the write leaves the previous checkpoint the newest.

One save is in flight at most: the next save (periodic or the final one) first waits for it.
Errors of the background write (a full disk) are raised in the training thread at the next
``poll`` or ``wait``. The writer thread is a daemon: a process that dies mid-write leaves a
``.partial`` folder, which the next save removes.
"""
from __future__ import annotations

import copy
import os
import threading
import time
from dataclasses import dataclass

import torch
from deepspeed.runtime.checkpoint_engine.checkpoint_engine import CheckpointEngine

from hpc_bert.atomic import write_bytes_atomic
from hpc_bert.pretrain import faults
from hpc_bert.pretrain.checkpoint import checkpoints_dir, publish_checkpoint, remove_partials, tag_for
from hpc_bert.pretrain.distributed import barrier

WRITTEN_MARK = "rank_{rank}.written"
FAILED_MARK = "rank_{rank}.failed"  # best effort: tells rank 0's writer to stop waiting
MARK_WAIT_S = 0.05  # rank 0's writer checks for the other ranks' marks this often, only while a save is in flight


def save_file(state, path: str) -> None:
    """torch.save through a Python file, fsynced: a failed write (a full disk) surfaces as its
    OSError (torch.save to a path says only "unexpected pos"), so the loop can tell what happened."""
    try:
        with open(path, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
    except RuntimeError as e:
        if isinstance(e.__context__, OSError):
            e.__context__.filename = e.__context__.filename or path
            raise e.__context__ from None
        raise


def host_copy(obj, buffers: dict | None = None, key: tuple = ()):
    """A deep copy with every tensor copied to host memory (a clone on CPU): what the writer
    thread serialises while training goes on mutating the originals. With ``buffers``, a tensor
    is copied into the host buffer kept at its place ``key`` from the previous save (no fresh
    allocation, no page faults: the copy is most of what a background save blocks for); a CUDA
    tensor's buffer is pinned."""
    if torch.is_tensor(obj):
        if buffers is None:
            return obj.detach().to("cpu", copy=True)
        buf = buffers.get(key)
        if buf is None or buf.shape != obj.shape or buf.dtype != obj.dtype:
            buf = buffers[key] = torch.empty(obj.shape, dtype=obj.dtype, pin_memory=obj.is_cuda)
        return buf.copy_(obj.detach())
    if isinstance(obj, dict):
        items = ((k, host_copy(v, buffers, (*key, k))) for k, v in obj.items())
        return {k: v for k, v in items} if type(obj) is dict else type(obj)(items)
    if isinstance(obj, (list, tuple)) and type(obj) in (list, tuple):
        return type(obj)(host_copy(v, buffers, (*key, i)) for i, v in enumerate(obj))
    return copy.deepcopy(obj)


class _HostCopy(CheckpointEngine):
    """DeepSpeed's checkpoint-engine interface, recording (path, host copy) instead of writing."""

    def __init__(self, buffers: dict):
        super().__init__(None)
        self.files: list[tuple[str, object]] = []
        self.buffers = buffers

    def create(self, info) -> None:
        pass

    def makedirs(self, path, exist_ok=False) -> None:
        os.makedirs(path, exist_ok=exist_ok)

    def save(self, state_dict, path: str) -> None:
        # keyed by the file's name in the folder, so the same state lands in the same buffers each save
        self.files.append((path, host_copy(state_dict, self.buffers, (os.path.basename(path),))))

    def load(self, path: str, map_location=None):
        raise RuntimeError("the host-copy checkpoint engine only saves")

    def commit(self, info) -> bool:
        return True


@dataclass
class SaveDone:
    """A background save that reached disk: published (rank 0) or this rank's share written."""
    tag: str
    reason: str  # why it was saved: "periodic", or the stop's end reason
    step: int
    elapsed_s: float
    blocked_s: float  # how long the training thread was blocked (the host copy)
    write_s: float    # how long the background write took, publication included


class AsyncCheckpointer:
    """Periodic saves for one allocation: ``save`` (collective), ``poll`` each step, ``wait`` at the end."""

    def __init__(self, run_dir: str, rank: int, world_size: int, keep: int):
        self.run_dir, self.rank, self.world_size, self.keep = run_dir, rank, world_size, keep
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._done: SaveDone | None = None
        self.pending_step: int | None = None
        self._buffers: dict = {}  # host copies, reused save after save (only one save is in flight)

    def save(self, engine, step: int, meta: dict, rank_state: dict, elapsed_s, reason: str) -> float:
        """Collective, every rank at the same step: copy the state to host and start writing it
        (``wait`` after it makes a blocking save). ``elapsed_s``: the budget elapsed the checkpoint
        records, or a function read when it is published (a blocking save counts its own time).
        Returns the seconds the caller was blocked."""
        t0 = time.monotonic()
        self.wait()
        root, partial = checkpoints_dir(self.run_dir), tag_for(step) + ".partial"
        if self.rank == 0:
            remove_partials(self.run_dir)
        barrier()
        capture, own = _HostCopy(self._buffers), engine.checkpoint_engine
        engine.checkpoint_engine = capture
        try:
            engine.save_checkpoint(root, tag=partial, save_latest=False)
        finally:
            engine.checkpoint_engine = own
        files = capture.files + [(os.path.join(root, partial, f"rank_{self.rank}_state.pt"), host_copy(rank_state))]
        blocked = time.monotonic() - t0
        self.pending_step = step
        self._thread = threading.Thread(target=self._write, args=(files, step, meta, elapsed_s, blocked, reason),
                                        name="hpc_bert-checkpoint-writer", daemon=True)
        self._thread.start()
        return blocked

    def _write(self, files, step: int, meta: dict, elapsed_s, blocked: float, reason: str) -> None:
        t0, folder = time.monotonic(), os.path.dirname(files[-1][0])
        try:
            for path, state in files:
                save_file(state, path)
            write_bytes_atomic(os.path.join(folder, WRITTEN_MARK.format(rank=self.rank)), b"")
            faults.at("save", step)  # tests: a kill (or a signal) in the middle of a background save
            elapsed_s = elapsed_s() if callable(elapsed_s) else elapsed_s
            if self.rank == 0:
                self._await_marks(folder)
                publish_checkpoint(self.run_dir, step, meta, elapsed_s, self.keep)
            self._done = SaveDone(tag_for(step), reason, step, elapsed_s, blocked, time.monotonic() - t0)
        except BaseException as e:  # noqa: BLE001 - handed to the training thread, which ends the allocation
            self._error = e
            try:
                with open(os.path.join(folder, FAILED_MARK.format(rank=self.rank)), "wb"):
                    pass
            except OSError:
                pass  # a full disk may refuse even an empty file: the allocation ends anyway

    def _await_marks(self, folder: str) -> None:
        marks = [os.path.join(folder, WRITTEN_MARK.format(rank=r)) for r in range(self.world_size)]
        while not all(os.path.exists(m) for m in marks):
            failed = [r for r in range(self.world_size) if os.path.exists(os.path.join(folder, FAILED_MARK.format(rank=r)))]
            if failed:
                raise RuntimeError(f"rank {failed[0]} could not write its share of {folder}")
            time.sleep(MARK_WAIT_S)

    def poll(self) -> SaveDone | None:
        """The save that finished since the last call, if any; raises the background write's error."""
        if self._thread is not None and not self._thread.is_alive():
            return self._collect()
        return None

    def wait(self) -> SaveDone | None:
        """Block until this rank's save in flight is on disk (and published, on rank 0). Collective
        callers that then read the checkpoints folder add a barrier (rank 0 may still publish)."""
        if self._thread is None:
            return None
        self._thread.join()
        return self._collect()

    def abandon(self, timeout_s: float) -> None:
        """The allocation ends on a fault: give the write in flight ``timeout_s`` to stop, then
        leave it (a daemon thread; its partial folder is removed now or by the next save)."""
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._thread, self._error, self._done, self.pending_step = None, None, None, None

    def _collect(self) -> SaveDone | None:
        self._thread, self.pending_step = None, None
        error, done = self._error, self._done
        self._error, self._done = None, None
        if error is not None:
            raise error
        return done

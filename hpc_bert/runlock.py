"""One live job per run dir.

A POSIX record lock (``fcntl.lockf``) on RUN_DIR/.hpc_bert.lock is held for the life of the
process that drives the run. The kernel drops it when that process dies — even by SIGKILL
or a node reboot — so a lock file left behind by a killed job is simply stale: the next
job takes it over and says so. The file's text names the owner for error messages.
POSIX locks also work across hosts on NFS (lockd / NFSv4), unlike flock on old kernels.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time

from hpc_bert import runenv
from hpc_bert.errors import UserError
from hpc_bert.layout import LOCK_NAME


def _describe(owner: dict) -> str:
    job = f"job {owner['job_id']} " if owner.get("job_id") else ""
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("since", 0)))
    return f"{job}(pid {owner.get('pid')} on {owner.get('host')}, since {since})"


class RunLock:
    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, LOCK_NAME)
        self._fd: int | None = None
        self.took_over: dict | None = None  # owner record of a stale lock we replaced

    def _read_owner(self, fd: int) -> dict:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 4096)
        try:
            return json.loads(raw.decode() or "{}")
        except (ValueError, UnicodeDecodeError):
            return {}

    def acquire(self) -> "RunLock":
        os.makedirs(self.run_dir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = self._read_owner(fd)
            os.close(fd)
            raise UserError(
                f"run dir {self.run_dir} is in use by {_describe(owner)}: wait for that job to end "
                "(or cancel it), or pass a different --output_dir for a new run") from None
        previous = self._read_owner(fd)
        if previous.get("pid"):
            self.took_over = previous
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "job_id": runenv.job_id() or "", "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # a clean exit leaves no owner behind
            fcntl.lockf(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def live_owner(run_dir: str) -> dict | None:
    """The owner record if a live process holds the run dir, else None (no lock taken)."""
    path = os.path.join(run_dir, LOCK_NAME)
    if not os.path.exists(path):
        return None
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        raw = os.pread(fd, 4096, 0)
        os.close(fd)
        try:
            return json.loads(raw.decode() or "{}") or {"pid": "?"}
        except ValueError:
            return {"pid": "?"}
    fcntl.lockf(fd, fcntl.LOCK_UN)
    os.close(fd)
    return None


def check_not_live(run_dir: str) -> None:
    owner = live_owner(run_dir)
    if owner is not None:
        raise UserError(f"run dir {run_dir} is in use by {_describe(owner)}: wait for that job to end "
                        "(or cancel it), or choose a different run dir")

"""Crash-safe files, the one helper every writer uses: write a temp file in the same folder,
fsync it, rename it over the target, fsync the folder.

A reader sees either the old file or the new one, never a half-written one, even if the
writer is killed (SIGKILL, node failure) at any instant. ``atomic_output`` is the general
form (for writers that want a path, such as h5py or ``zipfile``); the others are shorthands.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from typing import Any, Callable, Iterator


def fsync_path(path: str) -> None:
    """fsync a file or a folder (a folder's entry list makes a rename durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path: str, before_commit: Callable[[], None] | None = None) -> Iterator[str]:
    """Yield a temp path next to ``path``; on success it is fsynced and renamed over ``path``,
    on any error (or a kill) it is removed and ``path`` is untouched. ``before_commit`` runs
    between the fsync and the rename (fault injection)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        yield tmp
        fsync_path(tmp)
        if before_commit is not None:
            before_commit()
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_path(folder)


def file_sha256(path: str) -> str:
    """The hex SHA-256 of a file, read in 1 MB blocks (any size, bounded memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_bytes_atomic(path: str, data: bytes, before_commit: Callable[[], None] | None = None) -> None:
    with atomic_output(path, before_commit) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)


def write_text_atomic(path: str, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def read_json(path: str) -> Any:
    """A JSON file written by ``write_json_atomic`` (never half-written), or None when absent."""
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        return json.load(fh)


def write_json_atomic(path: str, obj: Any, before_commit: Callable[[], None] | None = None) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=1, sort_keys=False) + "\n").encode(), before_commit)


def remove_stale_temps(path: str) -> int:
    """Delete the temp files that writers of ``path`` killed before their rename left behind
    (call it only while no other process writes ``path``); returns how many."""
    folder, name = os.path.split(os.path.abspath(path))
    prefix = "." + name + "."
    try:
        stale = [n for n in os.listdir(folder) if n.startswith(prefix) and n.endswith(".tmp")]
    except FileNotFoundError:
        return 0
    for n in stale:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(folder, n))
    return len(stale)


@contextlib.contextmanager
def atomic_folder(path: str) -> Iterator[str]:
    """Yield a fresh temp folder path beside ``path`` (not yet created: the writer makes it); on
    success it replaces ``path`` (whatever was there goes), on any error it is removed and
    ``path`` is untouched. A reader never sees a half-written folder under ``path``."""
    tmp = path.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)  # left by a writer that was killed
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(path, ignore_errors=True)
    os.rename(tmp, path)
    fsync_path(os.path.dirname(os.path.abspath(path)))

"""Read W&B's offline run files (RUN_DIR/wandb/offline-run-*/run-<id>.wandb) for tests.

The file is a LevelDB-style log of protobuf ``Record`` messages: a 7-byte header (":W&B",
magic, version), then 32 KiB blocks of chunks (crc32, length, type: full / first / middle /
last). wandb 0.31 ships no reader of its own, so the tests parse it here.
"""
from __future__ import annotations

import glob
import json
import os
import struct

BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: str):
    from wandb.proto import wandb_internal_pb2 as pb
    raw = open(path, "rb").read()
    assert raw[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, pending = 7, b""
    while pos + 7 <= len(raw):
        left = BLOCK - pos % BLOCK
        if left < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        pending += raw[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (FULL, LAST):
            rec = pb.Record()
            rec.ParseFromString(pending)
            pending = b""
            yield rec


def offline_runs(run_dir: str) -> list[dict]:
    """One dict per offline run folder, oldest first: id, history rows, whether it was marked preempting."""
    out = []
    for folder in sorted(glob.glob(os.path.join(run_dir, "wandb", "offline-run-*"))):
        (path,) = glob.glob(os.path.join(folder, "run-*.wandb"))
        run = {"folder": folder, "id": None, "history": [], "preempting": False, "name": None, "project": None}
        for rec in records(path):
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                run.update(id=rec.run.run_id, name=rec.run.display_name, project=rec.run.project)
            elif kind == "history":
                run["history"].append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                       for item in rec.history.item})
            elif kind == "preempting":
                run["preempting"] = True
        out.append(run)
    return out

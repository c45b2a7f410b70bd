"""Which training checkpoints a run dir holds, read without torch.

``status`` and ``submit`` look here (they must start without importing torch); checkpoint.py
writes and loads the checkpoints themselves. A folder checkpoints/step_<9 digits>/ is complete
once its meta.json exists (written last); latest.json points at the newest.
"""
from __future__ import annotations

import json
import os
import re

from hpc_bert.layout import CHECKPOINT_META, CHECKPOINT_POINTER, CHECKPOINTS_DIR

TAG_RE = re.compile(r"^step_(\d{9})$")


def checkpoints_dir(run_dir: str) -> str:
    return os.path.join(run_dir, CHECKPOINTS_DIR)


def tag_for(step: int) -> str:
    return f"step_{step:09d}"


def complete_checkpoints(run_dir: str) -> list[str]:
    """Tags of complete checkpoints, oldest first."""
    root = checkpoints_dir(run_dir)
    if not os.path.isdir(root):
        return []
    tags = [t for t in os.listdir(root) if TAG_RE.match(t) and os.path.isfile(os.path.join(root, t, CHECKPOINT_META))]
    return sorted(tags)


def read_meta(run_dir: str, tag: str) -> dict:
    with open(os.path.join(checkpoints_dir(run_dir), tag, CHECKPOINT_META)) as fh:
        return json.load(fh)


def find_latest(run_dir: str) -> dict | None:
    """Meta of the newest complete checkpoint (the pointer's, else the highest step)."""
    tags = complete_checkpoints(run_dir)
    if not tags:
        return None
    try:
        with open(os.path.join(checkpoints_dir(run_dir), CHECKPOINT_POINTER)) as fh:
            tag = json.load(fh)["tag"]
        if tag in tags and tag == tags[-1]:
            return read_meta(run_dir, tag)
    except (OSError, ValueError, KeyError, TypeError):
        pass  # a missing or damaged pointer falls back to scanning
    return read_meta(run_dir, tags[-1])

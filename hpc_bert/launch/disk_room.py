"""Room on the run dir's file system for what the chain will write, checked before submitting.

The peak a run reaches: ``--keep_checkpoints`` training checkpoints plus the one being written
beside them, each of the model's real size (``checkpoint.checkpoint_bytes`` of the parameter
count built on the meta device), plus one fine-tune checkpoint (fp32 weights) per marker and
one at the end. What the run dir already holds of these counts as written: a resubmission
needs only the rest.
"""
from __future__ import annotations

import os
import shutil

from hpc_bert.errors import UserError
from hpc_bert.layout import CHECKPOINTS_DIR, FINETUNE_DIR

FINETUNE_BYTES_PER_PARAM = 4  # save_pretrained writes the fp32 weights


def _existing_folder(path: str) -> str:
    """The nearest existing folder at or above ``path`` (the run dir may not exist yet)."""
    path = os.path.abspath(path)
    while not os.path.isdir(path):
        path = os.path.dirname(path)
    return path


def _bytes_under(path: str) -> int:
    if not os.path.isdir(path):
        return 0
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def room_needed(n_params: int, keep: int, finetune_checkpoints: int) -> tuple[int, int]:
    """(training checkpoints' bytes at their peak, fine-tune checkpoints' bytes)."""
    from hpc_bert.pretrain.checkpoint import checkpoint_bytes  # keeps torch out of submit's start-up
    return (keep + 1) * checkpoint_bytes(n_params), finetune_checkpoints * FINETUNE_BYTES_PER_PARAM * n_params


def check_disk_room(run_dir: str, n_params: int, keep: int, finetune_checkpoints: int, free: int | None = None) -> None:
    """One line naming what is missing when the run dir's file system cannot hold the run."""
    training, finetune = room_needed(n_params, keep, finetune_checkpoints)
    written = _bytes_under(os.path.join(run_dir, CHECKPOINTS_DIR)) + _bytes_under(os.path.join(run_dir, FINETUNE_DIR))
    needed = max(0, training + finetune - written)
    folder = _existing_folder(run_dir)
    free = shutil.disk_usage(folder).free if free is None else free
    if free < needed:
        gib = 2 ** 30
        raise UserError(f"{folder} has {free / gib:.2f} GiB free but the run needs {needed / gib:.2f} GiB more "
                        f"({keep + 1} training checkpoints of {training / (keep + 1) / gib:.2f} GiB "
                        f"(--keep_checkpoints {keep} + the one being written, {n_params / 1e6:.1f}M parameters) and "
                        f"{finetune_checkpoints} fine-tune checkpoints of {finetune / max(finetune_checkpoints, 1) / gib:.2f} GiB"
                        f"{f', less {written / gib:.2f} GiB already written' if written else ''}): free "
                        f"{(needed - free) / gib:.2f} GiB, lower --keep_checkpoints, or pass another --run_dir")

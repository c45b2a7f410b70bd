"""Training checkpoints (DeepSpeed, collective) and fine-tune checkpoints (HF dirs).

Layout of RUN_DIR/checkpoints/:
  step_000001200/          complete: DeepSpeed files + rank_<r>_state.pt + meta.json
  step_000001500.partial/  being written (or torn by a crash): never loaded, removed later
  latest.json              pointer {tag, step, elapsed_s}, replaced atomically

A checkpoint becomes visible only through a rename of its folder after every rank has
written and fsynced its files, followed by an atomic rewrite of the pointer. A crash at
any instant therefore leaves the previous complete checkpoint as the newest one.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import time

import numpy as np
import torch

from hpc_bert.testing import faults
from hpc_bert.atomic import fsync_path, write_json_atomic
from hpc_bert.pretrain.distributed import barrier
from hpc_bert.errors import UserError
from hpc_bert.layout import CHECKPOINT_META, CHECKPOINT_POINTER, CHECKPOINTS_DIR, FINETUNE_DIR, FINETUNE_META

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


def _fsync_tree(path: str) -> None:
    for folder, _dirs, files in os.walk(path):
        for name in files:
            fsync_path(os.path.join(folder, name))
        fsync_path(folder)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# A training checkpoint holds fp32 weights and the optimizer's two moments (Adam, Lamb).
CHECKPOINT_BYTES_PER_PARAM = 4 * 3


def checkpoint_bytes(n_params: int) -> int:
    """The size of one training checkpoint of a model with ``n_params`` parameters."""
    return n_params * CHECKPOINT_BYTES_PER_PARAM


def check_free_space(run_dir: str, needed_bytes: int) -> None:
    os.makedirs(run_dir, exist_ok=True)
    free = shutil.disk_usage(run_dir).free
    if free < needed_bytes:
        raise UserError(f"not enough space for a checkpoint in {run_dir}: {free / 2**30:.1f} GiB free, "
                        f"about {needed_bytes / 2**30:.1f} GiB needed: free space or use another --output_dir")


def save_training_checkpoint(engine, run_dir: str, rank: int, step: int, meta: dict, rank_state: dict,
                             keep: int, elapsed_now) -> str:
    """Collective save; every rank must call it at the same step. Returns the tag."""
    root = checkpoints_dir(run_dir)
    tag = tag_for(step)
    final = os.path.join(root, tag)
    if os.path.isfile(os.path.join(final, CHECKPOINT_META)):
        return tag  # already saved at this step (e.g. a periodic save right before a stop)
    partial = tag + ".partial"
    if rank == 0:
        os.makedirs(root, exist_ok=True)
        for name in os.listdir(root):
            if name.endswith(".partial"):  # torn by an earlier crash; the lock rules out a live writer
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    barrier()
    engine.save_checkpoint(root, tag=partial, save_latest=False)
    torch.save(rank_state, os.path.join(root, partial, f"rank_{rank}_state.pt"))
    barrier()
    faults.at("save", step)  # tests: a signal, or a kill, in the middle of a save
    if rank == 0:
        _fsync_tree(os.path.join(root, partial))
        write_json_atomic(os.path.join(root, partial, CHECKPOINT_META), {**meta, "tag": tag, "elapsed_s": elapsed_now(),
                                                              "saved_wall": time.time()})
        os.rename(os.path.join(root, partial), final)
        fsync_path(root)
        saved = read_meta(run_dir, tag)
        write_json_atomic(os.path.join(root, CHECKPOINT_POINTER), {"tag": tag, "step": step, "elapsed_s": saved["elapsed_s"]})
        for old in complete_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(os.path.join(root, old), ignore_errors=True)
    barrier()
    return tag


def load_training_checkpoint(engine, run_dir: str, rank: int, tag: str) -> dict:
    """Restore weights and optimizer into ``engine``; returns this rank's extra state."""
    root = checkpoints_dir(run_dir)
    path, _client = engine.load_checkpoint(root, tag=tag, load_optimizer_states=True,
                                           load_lr_scheduler_states=False)
    if path is None:
        raise UserError(f"checkpoint {os.path.join(root, tag)} could not be loaded by DeepSpeed: move it aside "
                        "to resume from the previous one")
    state_file = os.path.join(root, tag, f"rank_{rank}_state.pt")
    if not os.path.isfile(state_file):
        raise UserError(f"checkpoint {os.path.join(root, tag)} has no state for rank {rank}: resume with the "
                        "world size it was saved with")
    return torch.load(state_file, weights_only=False)


# ---- fine-tune checkpoints: plain HF dirs, each written once ---------------------------

def finetune_dir(run_dir: str, name: str) -> str:
    return os.path.join(run_dir, FINETUNE_DIR, name)


def finetune_checkpoint_exists(run_dir: str, name: str) -> bool:
    return os.path.isfile(os.path.join(finetune_dir(run_dir, name), FINETUNE_META))


def save_finetune_checkpoint(hf_model, tokenizer, run_dir: str, name: str, meta: dict) -> str:
    """save_pretrained + tokenizer into a temp dir, then rename: a dir that exists is whole."""
    final = finetune_dir(run_dir, name)
    if finetune_checkpoint_exists(run_dir, name):
        return final
    tmp = final + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    hf_model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    write_json_atomic(os.path.join(tmp, FINETUNE_META), meta)
    _fsync_tree(tmp)
    shutil.rmtree(final, ignore_errors=True)  # an incomplete leftover without meta
    os.rename(tmp, final)
    fsync_path(os.path.dirname(final))
    return final

"""Training checkpoints (DeepSpeed, collective) and fine-tune checkpoints (HF dirs).

Layout of RUN_DIR/checkpoints/:
  step_000001200/          complete: DeepSpeed files + rank_<r>_state.pt + meta.json
  step_000001500.partial/  being written (or torn by a crash): never loaded, removed later
  latest.json              pointer {tag, step, elapsed_s}, replaced atomically

A checkpoint becomes visible only through a rename of its folder after every rank has
written and fsynced its files, followed by an atomic rewrite of the pointer. A crash at
any instant therefore leaves the previous complete checkpoint as the newest one.

A run dir is data, not code: every file read back is unpickled with
``torch.load(weights_only=True)``. DeepSpeed 0.19 loads its own files with
``weights_only=False`` (TorchCheckpointEngine.load and its ZeRO readers), so each of them is
first checked with the restricted unpickler (allow-listing only DeepSpeed's plain records:
a loss scaler, the ZeRO stage enum, fragment addresses); a file that would import anything
else is refused with one line before DeepSpeed opens it. The world size may differ from
the saving one: ZeRO 0 state is whole in every checkpoint; ZeRO 1/2 partitions are merged
and re-split here (``_load_zero_resplit``).
"""
from __future__ import annotations

import glob
import os
import pickle
import random
import re
import shutil
import time

import numpy as np
import torch

from hpc_bert.pretrain import faults
from hpc_bert.atomic import fsync_path, write_json_atomic
from hpc_bert.pretrain.distributed import barrier
from hpc_bert.errors import UserError
from hpc_bert.layout import CHECKPOINT_META, CHECKPOINT_POINTER, FINETUNE_DIR, FINETUNE_META
from hpc_bert.pretrain.checkpoint_index import (TAG_RE, checkpoints_dir, complete_checkpoints,  # noqa: F401
                                                find_latest, read_meta, tag_for)


def _fsync_tree(path: str) -> None:
    for folder, _dirs, files in os.walk(path):
        for name in files:
            fsync_path(os.path.join(folder, name))
        fsync_path(folder)


def rng_state() -> dict:
    """Python, numpy and torch RNG states as plain data (tuples, ints, tensors): weights_only loadable."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos,
                                                     has_gauss, gauss), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# A training checkpoint holds fp32 weights and the optimizer's two moments (Adam, Lamb).
CHECKPOINT_BYTES_PER_PARAM = 4 * 3


def checkpoint_bytes(n_params: int) -> int:
    """The size of one training checkpoint of a model with ``n_params`` parameters."""
    return n_params * CHECKPOINT_BYTES_PER_PARAM


def _deepspeed_safe_globals() -> list:
    """The non-tensor types DeepSpeed 0.19 pickles into its checkpoint files (plain records)."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address
    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def safe_load(path: str, deepspeed_types: bool = False):
    """``torch.load(weights_only=True)`` on CPU; a file that is not plain data fails with one line."""
    try:
        if deepspeed_types:
            with torch.serialization.safe_globals(_deepspeed_safe_globals()):
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [x for x in str(e).splitlines() if "GLOBAL" in x or "global" in x] or [type(e).__name__]
        why = lines[0].strip()[:200]  # e.g. "Trying to load unsupported GLOBAL posix.system ..."
        raise UserError(f"{path} is not plain checkpoint data and was not loaded (it would run code or "
                        f"build types outside the allow-list: {why}): it was tampered with or is not "
                        "hpc_bert's; move its checkpoint folder aside to resume from the previous one") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise UserError(f"{path} cannot be read ({type(e).__name__}: {str(e)[:200]}): the checkpoint is "
                        "damaged; move its folder aside to resume from the previous one") from None


def check_free_space(run_dir: str, needed_bytes: int) -> None:
    os.makedirs(run_dir, exist_ok=True)
    free = shutil.disk_usage(run_dir).free
    if free < needed_bytes:
        raise UserError(f"not enough space for a checkpoint in {run_dir}: {free / 2**30:.1f} GiB free, "
                        f"about {needed_bytes / 2**30:.1f} GiB needed: free space or use another --output_dir")


def remove_partials(run_dir: str) -> None:
    """Rank 0, before a save: delete folders torn by an earlier crash or a failed write (the run
    lock and the one-save-in-flight rule rule out a live writer)."""
    root = checkpoints_dir(run_dir)
    os.makedirs(root, exist_ok=True)
    for name in os.listdir(root):
        if name.endswith(".partial"):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def publish_checkpoint(run_dir: str, step: int, meta: dict, elapsed_s: float, keep: int) -> str:
    """Rank 0, once every rank's files of ``step`` are written: fsync, mark (meta.json), rename
    the partial folder into place, repoint latest.json, prune beyond ``keep``. Returns the tag."""
    root, tag = checkpoints_dir(run_dir), tag_for(step)
    partial = os.path.join(root, tag + ".partial")
    _fsync_tree(partial)
    write_json_atomic(os.path.join(partial, CHECKPOINT_META), {**meta, "tag": tag, "elapsed_s": elapsed_s,
                                                               "saved_wall": time.time()})
    os.rename(partial, os.path.join(root, tag))
    fsync_path(root)
    write_json_atomic(os.path.join(root, CHECKPOINT_POINTER), {"tag": tag, "step": step, "elapsed_s": elapsed_s})
    for old in complete_checkpoints(run_dir)[:-keep]:
        if not read_meta(run_dir, old).get("pinned"):  # a decay-start checkpoint outlives the rotation
            shutil.rmtree(os.path.join(root, old), ignore_errors=True)
    return tag


def is_saved(run_dir: str, step: int) -> bool:
    return os.path.isfile(os.path.join(checkpoints_dir(run_dir), tag_for(step), CHECKPOINT_META))


def save_training_checkpoint(engine, run_dir: str, rank: int, step: int, meta: dict, rank_state: dict,
                             keep: int, elapsed_now) -> str:
    """Collective save; every rank must call it at the same step. Returns the tag."""
    root = checkpoints_dir(run_dir)
    tag = tag_for(step)
    if is_saved(run_dir, step):
        return tag  # already saved at this step (e.g. a periodic save right before a stop)
    partial = tag + ".partial"
    if rank == 0:
        remove_partials(run_dir)
    barrier()
    engine.save_checkpoint(root, tag=partial, save_latest=False)
    torch.save(rank_state, os.path.join(root, partial, f"rank_{rank}_state.pt"))
    barrier()
    faults.at("save", step)  # tests: a signal, or a kill, in the middle of a save
    if rank == 0:
        publish_checkpoint(run_dir, step, meta, elapsed_now(), keep)
    barrier()
    return tag


def load_training_checkpoint(engine, run_dir: str, rank: int, tag: str, saved_world_size: int,
                             world_size: int) -> dict | None:
    """Restore weights and optimizer into ``engine``; returns {"loader": the global loader state,
    "rng": this rank's RNG states, or None when the world size changed (see pretrain.elastic)}."""
    root = checkpoints_dir(run_dir)
    folder = os.path.join(root, tag)
    state_file = os.path.join(folder, f"rank_{rank}_state.pt")
    mine = safe_load(state_file) if os.path.isfile(state_file) else None
    ds_files = sorted(glob.glob(os.path.join(folder, "*.pt")))
    for path in ds_files:  # DeepSpeed unpickles with weights_only=False: check every file first
        if not os.path.basename(path).startswith("rank_"):
            safe_load(path, deepspeed_types=True)
    resplit = saved_world_size != world_size and engine.zero_optimization_stage() in (1, 2)
    path, _client = engine.load_checkpoint(root, tag=tag, load_optimizer_states=not resplit,
                                           load_lr_scheduler_states=False, load_module_only=resplit)
    if path is None:
        raise UserError(f"checkpoint {folder} could not be loaded by DeepSpeed: move it aside "
                        "to resume from the previous one")
    if resplit:
        _load_zero_resplit(engine, folder)
    if saved_world_size == world_size and mine is None:
        raise UserError(f"checkpoint {folder} has no state for rank {rank}: the checkpoint is damaged; move "
                        "it aside to resume from the previous one")
    if saved_world_size != world_size:  # the loader state is global: rank 0's serves every rank
        return {"loader": safe_load(os.path.join(folder, "rank_0_state.pt"))["loader"], "rng": None}
    return mine


def _load_zero_resplit(engine, folder: str) -> None:
    """ZeRO 1/2 on a new world size (engine.load_checkpoint refuses a changed data-parallel size):
    merge the saved partitions of the fp32 master weights and of each optimizer moment into
    the whole flat group, and cut this rank's new partition with DeepSpeed's own padding rule."""
    files = glob.glob(os.path.join(folder, "*zero_pp_rank_*_mp_rank_00_optim_states.pt"))
    files.sort(key=lambda f: int(re.search(r"zero_pp_rank_(\d+)_", os.path.basename(f)).group(1)))
    states = [safe_load(f, deepspeed_types=True)["optimizer_state_dict"] for f in files]
    if not states:
        raise UserError(f"checkpoint {folder} has no ZeRO optimizer files: it is damaged; move it aside "
                        "to resume from the previous one")
    model = safe_load(sorted(glob.glob(os.path.join(folder, "mp_rank_*_model_states.pt")))[0], deepspeed_types=True)
    zero = engine.optimizer
    zero._load_global_state(states[0])  # loss scaler, clipping: the same on every partition
    zero._restore_from_elastic_fp32_weights(states)  # saved without padding: merge, re-pad, cut
    base = zero.optimizer
    for i, group in enumerate(base.param_groups):
        saved = [sd["base_optimizer_state"]["state"][i] for sd in states]
        fresh = {}
        for key, value in saved[0].items():
            if torch.is_tensor(value) and value.dim() == 1 and value.numel() > 1:  # a partitioned moment
                lean = [s[key][:s[key].numel() - sd["group_paddings"][i]] for s, sd in zip(saved, states)]
                fresh[key] = zero._partition_base_optimizer_state(key, lean, i).clone()
            else:  # a scalar (the step count): the same on every partition
                fresh[key] = value.clone() if torch.is_tensor(value) else value
        base.state[group["params"][0]] = fresh
    zero._link_all_hp_params()
    engine.global_steps, engine.skipped_steps = model["global_steps"], model["skipped_steps"]
    engine.global_samples = model.get("global_samples", engine.global_steps * engine.train_batch_size())


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

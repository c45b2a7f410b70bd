"""What a new budget means for a run that already trained: which checkpoint to resume from,
under which LR plan, or a one-line refusal. ``decide`` is pure (checkpoint metas in, a
``Resume`` out, no I/O); ``set_aside`` then moves what the change retires, on rank 0.

A --curve wsd run holds its peak LR until the decay starts, so the checkpoint saved where the
decay begins (``PINNED``, kept whatever the rotation says) is the state of *any* longer run at
that moment. Hence, for a new budget B' with decay start D' = B' (1 - decay_proportion):
  * the newest checkpoint is still in the stable phase (or is the decay-start one) and D' is not
    behind it: resume it under the new plan — an extension or an earlier end alike;
  * the decay was under way and D' is not behind the decay-start checkpoint: resume that one
    (the newer checkpoints are the abandoned decay: kept for reference, never resumed from);
  * otherwise D' has passed: the LR decays from its current value to 0 over the time left.
A budget at or below the training time already spent is refused, as is any change to a run
whose curve is not wsd (unless --allow_budget_change: the LR then jumps).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

from hpc_bert.atomic import write_json_atomic
from hpc_bert.errors import UserError
from hpc_bert.layout import (ABANDONED_DIR, CHECKPOINT_META, CHECKPOINT_POINTER, CHECKPOINTS_DIR, FINAL_NAME,
                             FINETUNE_DIR, GLUE_DIR, MARKER_PREFIX, budget_label)
from hpc_bert.pretrain.schedule import WsdPlan, wsd_plan

PINNED = "decay_start"  # meta["pinned"] of a decay-start checkpoint: the rotation never removes it


@dataclass(frozen=True)
class Resume:
    meta: dict                          # the checkpoint to resume from
    plan: WsdPlan | None                # the LR plan from here on (None: not --curve wsd)
    change: dict | None = None          # the ledger's record of the budget change (None: no change)
    abandoned: tuple[str, ...] = ()     # checkpoint tags newer than ``meta``, never to be resumed from
    pin: bool = False                   # pin ``meta``'s checkpoint: the decay of the new plan starts there
    decay_started: bool = False         # the new plan's decay begins at the resume point (nothing to save)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.4g} h"


def decide(newest: dict, checkpoints: list[dict], cfg) -> Resume:
    """Where and how to continue from ``newest`` under ``cfg``'s budget. ``checkpoints``: the
    metas of every complete checkpoint, oldest first (to find the decay-start one)."""
    s = cfg.schedule
    old_b, new_b, elapsed = newest["budget_s"], s.budget_s, newest["elapsed_s"]
    where = newest.get("tag", "the checkpoint")
    stored = WsdPlan.from_dict(newest["wsd"], s.decay_shape) if newest.get("wsd") else None
    if abs(old_b - new_b) <= 1e-6:
        plan = stored if stored else (wsd_plan(s) if s.curve == "wsd" else None)
        return Resume(newest, plan)
    record = {"wall": time.time(), "old_budget_s": old_b, "new_budget_s": new_b, "spent_s": elapsed}
    if stored is None or s.curve != "wsd":
        if not cfg.checkpoint.allow_budget_change:
            raise UserError(f"cannot resume {where}: budget {_hours(old_b)} -> {_hours(new_b)}: only a --curve wsd "
                            "run can change its budget (start one with --curve wsd); pass the original "
                            "--total_training_time, or --allow_budget_change to continue with the LR jumping "
                            "to the new schedule's value")
        plan = wsd_plan(s) if s.curve == "wsd" else None
        return Resume(newest, plan, {**record, "kind": "lr_jump", "from_tag": where, "from_elapsed_s": elapsed})
    if new_b <= elapsed:
        raise UserError(f"cannot change the budget of {cfg.checkpoint.output_dir} to {_hours(new_b)}: "
                        f"{_hours(elapsed)} ({elapsed:.0f} s) of training was already spent: pass a "
                        f"--total_training_time above {elapsed / 3600:.4g}")
    new_decay_s = new_b * (1.0 - s.decay_proportion)
    in_stable = newest.get("pinned") == PINNED or elapsed < stored.decay_start_s
    pinned = [m for m in checkpoints if m.get("pinned") == PINNED and m["elapsed_s"] <= elapsed]
    anchor = newest if in_stable else (pinned[-1] if pinned else None)
    if anchor is not None and new_decay_s >= anchor["elapsed_s"]:
        plan = WsdPlan.fresh(new_b, s.warmup_proportion, s.decay_proportion, s.decay_shape, warmup_s=stored.warmup_s)
        later = tuple(m["tag"] for m in checkpoints if m["step"] > anchor["step"])
        abandoned_s = elapsed - anchor["elapsed_s"]
        kind = "new_schedule" if not later else "restart_decay"
        return Resume(anchor, plan, {**record, "kind": kind, "from_tag": anchor["tag"],
                                     "from_elapsed_s": anchor["elapsed_s"], "abandoned_s": abandoned_s,
                                     "abandoned": list(later)}, abandoned=later)
    current = stored.multiplier(elapsed)
    if current <= 0.0:
        raise UserError(f"cannot extend {where}: its LR has decayed to 0 and no decay-start checkpoint is left in "
                        f"{cfg.checkpoint.output_dir}/{CHECKPOINTS_DIR} to restart the decay from: start a new run")
    plan = WsdPlan(stored.warmup_s, elapsed, new_b, current, s.decay_shape)
    return Resume(newest, plan, {**record, "kind": "decay_from_current_lr", "from_tag": where,
                                 "from_elapsed_s": elapsed, "decay_from": current},
                  pin=in_stable, decay_started=True)


def set_aside(run_dir: str, resume: Resume) -> None:
    """Rank 0, after every rank loaded the resume checkpoint: move the abandoned decay's checkpoints
    to ABANDONED_DIR, pin the resume checkpoint when the decay starts there, and rename the fine-tune
    checkpoints (and their GLUE results) of the old budget so the new budget writes its own."""
    change = resume.change
    if change is None or change["kind"] == "lr_jump":
        return
    label = budget_label(change["old_budget_s"])
    root = os.path.join(run_dir, CHECKPOINTS_DIR)
    if resume.abandoned:
        dest = os.path.join(run_dir, ABANDONED_DIR, label)
        os.makedirs(dest, exist_ok=True)
        for tag in resume.abandoned:
            if os.path.isdir(os.path.join(root, tag)):
                os.rename(os.path.join(root, tag), os.path.join(dest, tag))
        m = resume.meta  # the pointer names the newest checkpoint: now the resumed one
        write_json_atomic(os.path.join(root, CHECKPOINT_POINTER), {"tag": m["tag"], "step": m["step"],
                                                                 "elapsed_s": m["elapsed_s"]})
    if resume.pin:
        meta_path = os.path.join(root, resume.meta["tag"], CHECKPOINT_META)
        write_json_atomic(meta_path, {**resume.meta, "pinned": PINNED})
    for folder in (os.path.join(run_dir, FINETUNE_DIR), os.path.join(run_dir, GLUE_DIR)):
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            if name == FINAL_NAME or (name.startswith(MARKER_PREFIX) and "_budget_" not in name):
                target, n = os.path.join(folder, f"{name}_{label}"), 1
                while os.path.exists(target):  # the same old budget twice (B -> B' -> B): keep both
                    n += 1
                    target = os.path.join(folder, f"{name}_{label}_{n}")
                os.rename(os.path.join(folder, name), target)

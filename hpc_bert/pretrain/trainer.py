"""The pretraining loop, driven by the budget clock.

Read top to bottom: set up (no clock running), restore the newest complete checkpoint,
then loop — at each optimizer-step boundary every rank agrees on the clock and the stop
flag, asks the schedule what is due, and acts. The trainer knows nothing of SLURM: only a
stop flag (signals) and an optional allocation deadline.

Exit status: 0 when the budget (or early exit / early stop) is done, EXIT_REQUEUE (75)
when stopped early by a signal or the allocation deadline and a requeue should continue,
1 on a training failure (NaN / inf loss), 2 on a user error.
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass, field

import torch

from hpc_bert.testing import faults
from hpc_bert.pretrain import schedule
from hpc_bert.pretrain.checkpoint import (find_latest, load_training_checkpoint, rng_state,
                                 save_finetune_checkpoint, save_training_checkpoint, set_rng_state,
                                 finetune_checkpoint_exists, check_free_space, checkpoint_bytes)
from hpc_bert.pretrain.clock import BudgetClock, Ledger
from hpc_bert.config.flags import flat_dict
from hpc_bert.pretrain.distributed import (StopFlag, all_agree_max, all_sum, allocation_end, barrier,
                                  detect_env, init_distributed, shutdown)
from hpc_bert.errors import EXIT_REQUEUE, UserError
from hpc_bert.pretrain.events import EventLog
from hpc_bert.layout import FINAL_NAME, marker_name
from hpc_bert.model.bert import MaskedLM, build_hf_model, count_parameters, padded_vocab_size
from hpc_bert.model.optim import build_optimizer
from hpc_bert.launch.runlock import RunLock

def _process_start() -> float:
    """Wall time this process started (imports included in startup), now if unknown."""
    try:
        import psutil
        return psutil.Process(os.getpid()).create_time()
    except Exception:  # psutil is a DeepSpeed dependency, but startup is only reported
        return time.time()


PROCESS_START = _process_start()
# Fields that must match to resume: the model's shape and the data geometry.
SHAPE_FIELDS = ("encoder_ln_mode", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size", "max_position_embeddings", "hidden_act")


@dataclass
class TrainState:
    """Rank-independent progress, stored in each checkpoint's meta.json."""
    step: int = 0
    samples_seen: int = 0
    epochs_done: int = 0
    validations_done: list[int] = field(default_factory=list)
    markers_done: list[float] = field(default_factory=list)
    last_checkpoint_elapsed_s: float = 0.0
    last_checkpoint_epoch: int = 0
    last_val_loss: float | None = None


def log(rank: int, msg: str) -> None:
    if rank == 0:
        print(f"hpc_bert: {msg}", file=sys.stderr, flush=True)


def check_resume_compatible(meta: dict, cfg, vocab_size: int, world_size: int) -> None:
    """Refuse, with one line, to resume a checkpoint under a config it cannot continue."""
    where = meta.get("tag", "the checkpoint")
    old_shape, new_shape = meta["model_shape"], {f: getattr(cfg.model, f) for f in SHAPE_FIELDS}
    diff = [f"{k} {old_shape.get(k)} -> {v}" for k, v in new_shape.items() if old_shape.get(k) != v]
    if diff:
        raise UserError(f"cannot resume {where}: model shape differs ({', '.join(diff)}): use the original "
                        "model flags or a new --output_dir")
    if meta["vocab_size"] != vocab_size:
        raise UserError(f"cannot resume {where}: vocab size {meta['vocab_size']} -> {vocab_size}: use the "
                        "original --tokenizer_name or a new --output_dir")
    if abs(meta["budget_s"] - cfg.schedule.budget_s) > 1e-6 and not cfg.checkpoint.allow_budget_change:
        raise UserError(f"cannot resume {where}: budget {meta['budget_s'] / 3600:g} h -> "
                        f"{cfg.schedule.total_training_time:g} h changes the schedule: pass the original "
                        "--total_training_time, or add --allow_budget_change to continue under the new one")
    if meta["world_size"] != world_size:
        raise UserError(f"cannot resume {where}: saved with {meta['world_size']} ranks, now {world_size}: "
                        "run with the original number of tasks")


def deepspeed_config(cfg, accum: int, device: str) -> dict:
    if cfg.runtime.fp16 and device == "cpu":
        raise UserError("--fp16 needs a GPU (dynamic loss scaling is a CUDA path): drop --fp16 on CPU, or use --bf16")
    return {"train_batch_size": cfg.optim.train_batch_size,
            "train_micro_batch_size_per_gpu": cfg.optim.train_micro_batch_size_per_gpu,
            "gradient_accumulation_steps": accum, "gradient_clipping": cfg.optim.gradient_clipping,
            "zero_optimization": {"stage": cfg.runtime.zero_stage},
            "fp16": {"enabled": cfg.runtime.fp16, "loss_scale": 0, "initial_scale_power": 16},
            # bf16 as torch autocast over fp32 weights: on an H200 (BERT-large, bench/gpu.sh) this ran 1.53x faster than
            # DeepSpeed's bf16 weights + fp32 master copy, and needs no loss scaling.
            "torch_autocast": {"enabled": cfg.runtime.bf16, "dtype": "bfloat16"},
            "zero_allow_untested_optimizer": True,
            "steps_per_print": 10 ** 12, "wall_clock_breakdown": False}


def validate(engine, batches: list[dict], device: str, epoch: int) -> float:
    """Mean MLM loss over the fixed held-out set (all ranks' shares)."""
    engine.eval()
    total, count = 0.0, 0.0
    with torch.no_grad():
        for i, b in enumerate(batches):
            if i == len(batches) // 2:
                faults.at("validation", epoch)
            b = {k: v.to(device) for k, v in b.items()}
            n = float((b["labels"] != -100).sum())
            if n:
                total += float(engine(**b)) * n
                count += n
    engine.train()
    total, count = all_sum([total, count], device)
    return total / max(count, 1.0)


def run_training(cfg) -> int:
    import deepspeed
    from hpc_bert.data.loader import PretrainingDataLoader, check_dataset
    from hpc_bert.data.tokenizer import load_tokenizer

    s, run_dir = cfg.schedule, cfg.checkpoint.output_dir
    if not cfg.data.dataset_path:
        raise UserError("--dataset_path is not set: point it at a folder of HDF5 shards "
                        "(make one with python -m hpc_bert.data prepare)")
    denv = detect_env()
    rank, world = denv.rank, denv.world_size
    # ---- cheap checks first: nothing expensive happens before they pass ------------------
    for note in cfg.notes():
        log(rank, f"note: {note}")
    micro = cfg.optim.train_micro_batch_size_per_gpu
    if cfg.optim.train_batch_size % (micro * world):
        raise UserError(f"--train_batch_size {cfg.optim.train_batch_size} is not a multiple of micro batch x "
                        f"world size = {micro} x {world}: adjust the batch or the number of ranks")
    accum = cfg.optim.train_batch_size // (micro * world)
    tokenizer = load_tokenizer(cfg.model.tokenizer_name)
    vocab_size = cfg.model.vocab_size or padded_vocab_size(len(tokenizer))
    if vocab_size < len(tokenizer):
        raise UserError(f"--vocab_size {vocab_size} is smaller than the tokenizer's {len(tokenizer)} tokens: "
                        "leave --vocab_size unset")
    info = check_dataset(cfg.data.dataset_path, vocab_size=vocab_size)
    seq_len = getattr(info, "max_seq_length", None)
    if seq_len and seq_len > cfg.model.max_position_embeddings:
        raise UserError(f"shards in {cfg.data.dataset_path} have max_seq_length {seq_len} > "
                        f"--max_position_embeddings {cfg.model.max_position_embeddings}: raise it or re-prepare the data")
    lock = RunLock(run_dir).acquire() if rank == 0 else None
    try:
        ledger = Ledger.load(run_dir) if rank == 0 else None
        meta = find_latest(run_dir)
        if meta is not None:
            check_resume_compatible(meta, cfg, vocab_size, world)
        if meta is not None and meta["elapsed_s"] >= s.stop_s:
            log(rank, f"{run_dir}: training already finished ({meta['elapsed_s']:.1f} s of {s.stop_s:.1f} s); nothing to do")
            return 0
        if lock is not None and lock.took_over:
            log(rank, f"took over the stale lock of pid {lock.took_over.get('pid')} on {lock.took_over.get('host')}")
        return _train(cfg, denv, tokenizer, vocab_size, accum, meta, ledger, deepspeed,
                      PretrainingDataLoader)
    finally:  # every exit path, errors included, ends the process group (see shutdown)
        shutdown()
        if lock is not None:
            lock.release()


def _train(cfg, denv, tokenizer, vocab_size, accum, meta, ledger, deepspeed, loader_cls) -> int:
    s, v, run_dir = cfg.schedule, cfg.validation, cfg.checkpoint.output_dir
    rank, world = denv.rank, denv.world_size
    device = init_distributed(denv)
    torch.manual_seed(cfg.runtime.seed + rank)
    hf_model = build_hf_model(cfg.model, vocab_size, pad_token_id=tokenizer.pad_token_id or 0)
    model = MaskedLM(hf_model, cfg.model.sparse_mask_prediction)
    n_params = count_parameters(model)
    check_free_space(run_dir, checkpoint_bytes(n_params))
    engine, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=build_optimizer(model, cfg.optim),
                                                   config=deepspeed_config(cfg, accum, device))
    loader = loader_cls(cfg.data.dataset_path, micro_batch_size=cfg.optim.train_micro_batch_size_per_gpu,
                        rank=rank, world_size=world, seed=cfg.runtime.seed, vocab_size=vocab_size,
                        dynamic_masking=cfg.data.dynamic_masking, mlm_probability=cfg.data.mlm_probability,
                        mask_token_id=tokenizer.mask_token_id, prefetch=max(1, cfg.data.num_workers))
    state = TrainState()
    if meta is not None:
        rank_state = load_training_checkpoint(engine, run_dir, rank, meta["tag"])
        loader.load_state_dict(rank_state["loader"])
        set_rng_state(rank_state["rng"])
        state = TrainState(**meta["train_state"])
    val_batches = loader.validation_batches(v.validation_micro_batch, v.validation_max_samples) \
        if v.do_validation else []
    # ---- the clock starts at the first step; everything before is startup ----------------
    elapsed0 = meta["elapsed_s"] if meta else 0.0
    clock = BudgetClock(s.budget_s, elapsed0, s.simulated_step_seconds if s.clock == "simulated" else None)
    rt = cfg.runtime
    wandb_run = (dict(project=cfg.checkpoint.project_name, name=cfg.checkpoint.job_name, entity=rt.wandb_entity,
                      config=flat_dict(cfg)) if "wandb" in rt.report_to else None)
    events = EventLog(run_dir, rank == 0, s.budget_s, rt.tensorboard and "tensorboard" in rt.report_to,
                      rt.progress_bar, wandb_run)
    stop = StopFlag().install()
    deadline_end = allocation_end()
    save_s, step_s = 0.0, 0.0  # measured: they size the safety margin before the deadline
    if ledger is None and rank == 0:
        ledger = Ledger(run_dir, s.budget_s)
    startup_s = time.time() - PROCESS_START
    if rank == 0:
        ledger.begin_allocation(resumed_elapsed_s=elapsed0, step=state.step, startup_s=startup_s)
    log(rank, f"model {n_params / 1e6:.2f}M params ({cfg.model.encoder_ln_mode}, {cfg.model.num_hidden_layers}x"
              f"{cfg.model.hidden_size}, vocab {vocab_size}); world size {world} on {device}; batch "
              f"{cfg.optim.train_batch_size} = {cfg.optim.train_micro_batch_size_per_gpu} micro x {accum} accum x "
              f"{world} ranks; budget {s.total_training_time:g} h ({s.budget_s:.0f} s, {s.clock} clock); "
              + (f"resumed {meta['tag']} at {elapsed0:.1f} s ({elapsed0 / s.budget_s:.1%})" if meta else "fresh start")
              + f"; startup {startup_s:.1f} s")
    events.emit("allocation_start", state.step, elapsed0, startup_s=startup_s, world_size=world,
                **({"job_id": ledger.current.job_id, "restart_count": ledger.current.restart_count,
                    "allocation": len(ledger.allocations)} if rank == 0 else {}))

    def snapshot_meta() -> dict:
        return {"step": state.step, "train_state": dataclasses.asdict(state), "budget_s": s.budget_s,
                "world_size": world, "vocab_size": vocab_size, "config": flat_dict(cfg),
                "model_shape": {f: getattr(cfg.model, f) for f in SHAPE_FIELDS}}

    def save_checkpoint(why: str, agreed_elapsed: float) -> None:
        nonlocal save_s
        t0 = time.monotonic()
        with clock.phase("checkpoint"):
            state.last_checkpoint_elapsed_s, state.last_checkpoint_epoch = agreed_elapsed, state.epochs_done
            tag = save_training_checkpoint(engine, run_dir, rank, state.step, snapshot_meta(),
                                           {"rng": rng_state(), "loader": loader.state_dict()},
                                           cfg.checkpoint.keep_checkpoints, clock.elapsed)
        save_s = time.monotonic() - t0
        events.emit("checkpoint", state.step, clock.elapsed(), tag=tag, reason=why, seconds=round(save_s, 3))
        if rank == 0:
            ledger.heartbeat(clock, state.step, saved=True)

    def save_hf(name: str, extra: dict) -> None:
        if rank == 0 and not finetune_checkpoint_exists(run_dir, name):
            with clock.phase("checkpoint"):
                path = save_finetune_checkpoint(engine.module.hf_model, tokenizer, run_dir, name,
                                                {"step": state.step, "elapsed_s": clock.elapsed(),
                                                 "progress": clock.progress(), **extra})
            events.emit("finetune_checkpoint", state.step, clock.elapsed(), name=name, path=path, **extra)
        barrier()

    batches = iter(loader)
    engine.train()
    clock.start()
    reason, t_last_print, samples_last_print = None, time.monotonic(), state.samples_seen
    while True:
        # ---- step boundary: all ranks act on the same clock and the same stop flag -------
        near_deadline = deadline_end is not None and \
            time.time() + max(10.0, 2.0 * save_s + 3.0 * step_s) >= deadline_end
        flag, elapsed = all_agree_max([max(stop.code, 3 if near_deadline else 0), clock.elapsed()], device)
        reason = schedule.stop_reason(elapsed, s.budget_s, None if s.early_exit_time_marker is None
                                      else s.early_exit_time_marker * 3600.0) or StopFlag.reason(flag)
        if reason:
            cause = (stop.describe() if stop.code else "allocation deadline" if near_deadline
                     else "a signal on another rank" if flag else "schedule")
            break
        lr = schedule.learning_rate(cfg.optim.lr, s.lr_schedule, s.curve, s.warmup_proportion, elapsed,
                                    s.budget_s, state.step, s.max_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        t_step, loss_sum, epochs_ended = time.monotonic(), 0.0, 0
        for _ in range(accum):
            batch = next(batches)
            loss = engine(**{k: t.to(device) for k, t in batch.tensors.items()})
            engine.backward(loss)
            engine.step()
            loss_sum += float(loss.detach())
            epochs_ended += int(batch.last_in_epoch)
        clock.on_optimizer_step()
        step_s = time.monotonic() - t_step
        state.step += 1
        state.samples_seen += cfg.optim.train_batch_size
        loss_mean = loss_sum / accum
        # one agreed elapsed value drives every decision below, identically on all ranks
        bad, elapsed = all_agree_max([1.0 if schedule.is_bad_loss(loss_mean) else 0.0, clock.elapsed()], device)
        if bad:
            events.emit("error", state.step, clock.elapsed(), loss=loss_mean, lr=lr)
            log(rank, f"loss is {loss_mean} at step {state.step} (lr {lr:.3g}): training diverged; lower --lr or "
                      "raise --warmup_proportion; the last good checkpoint is kept")
            reason, cause = "error", "non-finite loss"
            break
        if state.step % cfg.runtime.print_steps == 0:
            (loss_all,) = all_sum([loss_mean / world], device)
            now = time.monotonic()
            rate = (state.samples_seen - samples_last_print) / max(now - t_last_print, 1e-9)
            t_last_print, samples_last_print = now, state.samples_seen
            events.emit("train", state.step, elapsed, loss=loss_all, lr=lr, samples_per_s=rate,
                        epoch=state.epochs_done)
            if rank == 0:
                ledger.heartbeat(clock, state.step)
        # ---- what is due now: validation at epoch ends, markers, checkpoints -------------
        for _ in range(epochs_ended):
            state.epochs_done += 1
            if v.do_validation and schedule.validation_due(
                    state.epochs_done, elapsed / s.budget_s, state.validations_done,
                    epochs_begin=v.validation_epochs_begin, epochs_middle=v.validation_epochs,
                    epochs_end=v.validation_epochs_end, begin_proportion=v.validation_begin_proportion,
                    end_proportion=v.validation_end_proportion):
                with clock.phase("validation"):
                    state.last_val_loss = validate(engine, val_batches, device, state.epochs_done)
                state.validations_done.append(state.epochs_done)
                events.emit("validation", state.step, elapsed, val_loss=state.last_val_loss, lr=lr,
                            epoch=state.epochs_done)
                if v.use_early_stopping and schedule.early_stop(elapsed, state.last_val_loss, v.early_stop_time,
                                                                v.early_stop_eval_loss):
                    reason, cause = "early_stop", f"validation loss {state.last_val_loss:.3f}"
        for m in schedule.markers_due(elapsed / s.budget_s, s.finetune_time_markers, state.markers_done):
            save_hf(marker_name(m), {"marker": m})
            state.markers_done.append(m)
            events.emit("marker", state.step, elapsed, marker=m, lr=lr)
            faults.at("marker", len(state.markers_done))
        if reason:
            break
        faults.at("step", state.step)
        if (state.epochs_done - state.last_checkpoint_epoch >= cfg.checkpoint.num_epochs_between_checkpoints
                or elapsed - state.last_checkpoint_elapsed_s >= cfg.checkpoint.checkpoint_every_minutes * 60):
            save_checkpoint("periodic", elapsed)
    # ---- the end of this allocation --------------------------------------------------------
    finished = reason in ("budget_done", "early_exit", "early_stop")
    if not finished and reason != "error":
        events.stopping(state.step, elapsed, reason, cause)
    if reason != "error":
        save_checkpoint(reason, elapsed)
        if finished and s.finetune_checkpoint_at_end:
            save_hf(FINAL_NAME, {"reason": reason})
    # every rank must hold the same weights: compare a checksum across ranks
    checksum = float(sum(p.detach().double().sum() for p in engine.module.parameters()))
    hi, neg_lo = all_agree_max([checksum, -checksum], device)
    events.emit("allocation_end", state.step, clock.elapsed(), reason=reason, cause=cause, world_size=world,
                param_checksum_min=-neg_lo, param_checksum_max=hi,
                **({"restart_count": ledger.current.restart_count} if rank == 0 else {}))
    if rank == 0:
        ledger.end_allocation(clock, state.step, reason)
    log(rank, f"stopped at step {state.step}, elapsed {clock.elapsed():.1f} s ({clock.progress():.1%} of the "
              f"budget): {reason} ({cause})")
    events.close(1 if reason == "error" else 0)
    stop.uninstall()
    if reason == "error":
        return 1
    return 0 if finished else EXIT_REQUEUE

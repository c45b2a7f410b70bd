"""The pretraining loop, driven by the budget clock.

Read top to bottom: set up (no clock running; --compile compiles here), restore the newest
complete checkpoint, then loop — at each optimizer-step boundary every rank agrees (one
all-reduce: stop code, elapsed, was the loss finite), ``step.decide`` says what is due, and
the loop acts. Inside an optimizer step nothing waits for the device: the loss is summed on
it and read only at print steps. The trainer knows nothing of SLURM: only a stop flag
(signals) and an optional allocation deadline.

Exit status: 0 when the budget (or early exit / early stop) is done, EXIT_REQUEUE (75)
when stopped early by a signal or the allocation deadline and a requeue should continue,
1 on a training failure (NaN / inf loss), 2 on a user error.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time

import numpy as np
import torch

from hpc_bert.data.loader import sample_ids_digest
from hpc_bert.pretrain import faults
from hpc_bert.pretrain import schedule
from hpc_bert.pretrain.async_save import AsyncCheckpointer
from hpc_bert.pretrain.checkpoint import (find_latest, load_training_checkpoint, rng_state,
                                 save_finetune_checkpoint, is_saved, set_rng_state,
                                 finetune_checkpoint_exists, check_free_space, checkpoint_bytes)
from hpc_bert.pretrain.fault_end import run_guarded
from hpc_bert.pretrain.watchdog import HangWatchdog
from hpc_bert.pretrain.clock import BudgetClock, Ledger
from hpc_bert.pretrain.elastic import accumulation_steps, fresh_rng_state
from hpc_bert.pretrain.engine import accumulate, deepspeed_config, initialize_engine
from hpc_bert.config.flags import flat_dict
from hpc_bert.pretrain.distributed import (StopCode, StopFlag, agree_step, all_agree_max, all_sum, barrier,
                                           init_distributed, shutdown)
from hpc_bert.runenv import allocation_end, dist_env, job_id
from hpc_bert.pretrain.step_decision import Agreed, Decision, TrainState, after_validation, decide
from hpc_bert.end_reason import EndReason
from hpc_bert.errors import UserError
from hpc_bert.pretrain.events import EventLog
from hpc_bert.layout import FINAL_NAME, marker_name
from hpc_bert.model.bert import MaskedLM, build_hf_model, count_parameters, padded_vocab_size
from hpc_bert.model.compile import prepare_compiled, use_compile
from hpc_bert.model.optim import build_optimizer
from hpc_bert.runlock import RunLock

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
    saved_batch = meta.get("config", {}).get("train_batch_size", cfg.optim.train_batch_size)
    if saved_batch != cfg.optim.train_batch_size:  # the world size may change; the global batch may not
        raise UserError(f"cannot resume {where}: --train_batch_size {saved_batch} -> {cfg.optim.train_batch_size} "
                        f"changes the global batches: pass --train_batch_size {saved_batch} (any world size "
                        "that divides it works)")


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
    from hpc_bert.data.loader import PretrainingDataLoader, check_dataset
    from hpc_bert.data.tokenizer import load_tokenizer

    s, run_dir = cfg.schedule, cfg.checkpoint.output_dir
    if not cfg.data.dataset_path:
        raise UserError("--dataset_path is not set: point it at a folder of HDF5 shards "
                        "(make one with python -m hpc_bert.data prepare)")
    denv = dist_env()
    rank, world = denv.rank, denv.world_size
    # ---- cheap checks first: nothing expensive happens before they pass ------------------
    for note in cfg.notes():
        log(rank, f"note: {note}")
    accum = accumulation_steps(cfg.optim.train_batch_size, cfg.optim.train_micro_batch_size_per_gpu, world)
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
        return run_guarded(_Allocation(cfg, denv, tokenizer, vocab_size, accum, meta, ledger,
                                       PretrainingDataLoader, info))
    finally:  # every exit path, errors included, ends the process group (see shutdown)
        shutdown()
        if lock is not None:
            lock.release()


class _Allocation:
    """One allocation's training: set up before the clock, then the loop (see ``run``).

    Holds what the loop's actions share (engine, loader, clock, events, state); each action
    is one method, so ``run`` reads agree -> decide -> act from top to bottom.
    """

    def __init__(self, cfg, denv, tokenizer, vocab_size, accum, meta, ledger, loader_cls, info):
        s, v, run_dir = cfg.schedule, cfg.validation, cfg.checkpoint.output_dir
        self.cfg, self.tokenizer, self.vocab_size, self.accum, self.run_dir = cfg, tokenizer, vocab_size, accum, run_dir
        rank, world = self.rank, self.world = denv.rank, denv.world_size
        device = self.device = init_distributed(denv)
        torch.manual_seed(cfg.runtime.seed + rank)
        hf_model = build_hf_model(cfg.model, vocab_size, pad_token_id=tokenizer.pad_token_id or 0)
        micro = cfg.optim.train_micro_batch_size_per_gpu
        # static masks hold at most max_predictions_per_seq per row; dynamic masks have no cap
        max_predictions = None if cfg.data.dynamic_masking else info.max_predictions_per_seq
        model = MaskedLM(hf_model, cfg.model.sparse_mask_prediction, max_predictions=max_predictions)
        n_params = self.n_params = count_parameters(model)
        check_free_space(run_dir, checkpoint_bytes(n_params))
        self.loader = loader_cls(cfg.data.dataset_path, micro_batch_size=micro,
                                 rank=rank, world_size=world, seed=cfg.runtime.seed, vocab_size=vocab_size,
                                 dynamic_masking=cfg.data.dynamic_masking, mlm_probability=cfg.data.mlm_probability,
                                 mask_token_id=tokenizer.mask_token_id, prefetch=max(1, cfg.data.num_workers))
        val_batches = self.loader.validation_batches(v.validation_micro_batch, v.validation_max_samples) \
            if v.do_validation else []
        self.val_batches = val_batches
        # compiling is startup: it happens before the clock starts and before the engine exists
        self.compile_s = prepare_compiled(model, cfg.runtime, run_dir, device, micro, info.max_seq_length,
                                          lambda msg: log(rank, msg), len(val_batches[0]["input_ids"])
                                          if val_batches else None) if use_compile(cfg.runtime, device) else 0.0
        self.engine, self.optimizer = initialize_engine(model, build_optimizer(model, cfg.optim),
                                                        deepspeed_config(cfg, accum, device))
        self.state = TrainState()
        if meta is not None:
            rank_state = load_training_checkpoint(self.engine, run_dir, rank, meta["tag"], meta["world_size"], world)
            self.loader.load_state_dict(rank_state["loader"])
            if rank_state["rng"] is None:  # another world size: per-rank streams cannot carry over
                fresh_rng_state(cfg.runtime.seed, rank, meta["step"])
            else:
                set_rng_state(rank_state["rng"])
            self.state = TrainState(**meta["train_state"])
        # ---- the clock starts at the first step; everything before is startup ----------------
        self.elapsed0 = meta["elapsed_s"] if meta else 0.0
        self.clock = BudgetClock(s.budget_s, self.elapsed0, s.simulated_step_seconds if s.clock == "simulated" else None)
        rt = cfg.runtime
        wandb_run = (dict(project=cfg.checkpoint.project_name, name=cfg.checkpoint.job_name, entity=rt.wandb_entity,
                          config=flat_dict(cfg)) if "wandb" in rt.report_to else None)
        self.events = EventLog(run_dir, rank == 0, s.budget_s, rt.tensorboard and "tensorboard" in rt.report_to,
                               rt.progress_bar, wandb_run)
        self.stop = StopFlag().install()
        self.deadline_end = allocation_end()
        self.save_s, self.step_s = 0.0, 0.0  # measured: they size the safety margin before the deadline
        self.saver = AsyncCheckpointer(run_dir, rank, world, cfg.checkpoint.keep_checkpoints)
        self.watchdog = HangWatchdog(run_dir, rank, job_id() or f"pid-{os.getpid()}", rt.hang_timeout_s)
        if ledger is None and rank == 0:
            ledger = Ledger(run_dir, s.budget_s)
        self.ledger = ledger
        startup_s = time.time() - PROCESS_START
        if rank == 0:
            ledger.begin_allocation(resumed_elapsed_s=self.elapsed0, step=self.state.step, startup_s=startup_s,
                                    world_size=world)
        log(rank, f"model {n_params / 1e6:.2f}M params ({cfg.model.encoder_ln_mode}, {cfg.model.num_hidden_layers}x"
                  f"{cfg.model.hidden_size}, vocab {vocab_size}); world size {world} on {device}; batch "
                  f"{cfg.optim.train_batch_size} = {micro} micro x {accum} accum x "
                  f"{world} ranks; budget {s.total_training_time:g} h ({s.budget_s:.0f} s, {s.clock} clock); "
                  + (f"resumed {meta['tag']} at {self.elapsed0:.1f} s ({self.elapsed0 / s.budget_s:.1%}), saved "
                     f"on {meta['world_size']} ranks" if meta else "fresh start")
                  + f"; startup {startup_s:.1f} s" + (f" (compile {self.compile_s:.1f} s)" if self.compile_s else ""))
        self.events.emit("allocation_start", self.state.step, self.elapsed0, startup_s=startup_s, world_size=world,
                         compile_s=round(self.compile_s, 3),
                         **({"job_id": ledger.current.job_id, "restart_count": ledger.current.restart_count,
                             "allocation": len(ledger.allocations)} if rank == 0 else {}))

    # ---- the loop ----------------------------------------------------------------------------
    def run(self) -> int:
        state, clock = self.state, self.clock
        batches = iter(self.loader)
        self.engine.train()
        clock.start()
        loss_sum, epochs_ended, t_step = None, 0, time.monotonic()
        self._t_print, self._samples_print = time.monotonic(), state.samples_seen
        while True:
            # agree: the boundary's one all-reduce (stop code, elapsed, the step's loss finite?)
            code, elapsed, nonfinite = agree_step(self.stop_code(), clock.elapsed(), loss_sum, self.device)
            if loss_sum is not None:
                self.step_s = time.monotonic() - t_step  # the agreement waited for the step to finish
            self.saved(self.saver.poll())
            self.watchdog.step_boundary(self.step_s if loss_sum is not None else 0.0)
            agreed = Agreed(StopCode(code), elapsed, nonfinite, epochs_ended)
            # decide: a pure function of the agreed values, the config and the state
            d = decide(agreed, self.cfg, state)
            # act
            if d.stop is EndReason.ERROR:
                self.diverged(loss_sum)
                break
            if loss_sum is not None and state.step % self.cfg.runtime.print_steps == 0:
                self.print_step(loss_sum, elapsed)
            for epoch in d.validate:
                self.validate(epoch, elapsed)
                d = after_validation(d, state.last_val_loss, elapsed, self.cfg)
            for m in d.markers:
                self.save_marker(m, elapsed)
            if d.stop and not d.stop.finished:  # W&B: mark the run preempting before the save
                self.events.stopping(state.step, elapsed, d.stop, d.cause)
            if d.checkpoint:
                self.save_checkpoint(d.checkpoint, elapsed)
            if d.stop:
                break
            t_step = time.monotonic()
            loss_sum, epochs_ended = self.optimizer_step(batches, elapsed)
            faults.at("step", state.step)  # tests: a signal after step N is agreed at N's boundary
        return self.finish(d)

    def stop_code(self) -> StopCode:
        """This rank's request: a signal, or the allocation end closer than a save and a few steps."""
        near_deadline = self.deadline_end is not None and \
            time.time() + max(10.0, 2.0 * self.save_s + 3.0 * self.step_s) >= self.deadline_end
        return max(self.stop.code, StopCode.DEADLINE if near_deadline else StopCode.NONE)

    def optimizer_step(self, batches, elapsed: float) -> tuple[torch.Tensor, int]:
        """One optimizer step (accum micro batches). No host sync: the loss stays on the device."""
        s, state = self.cfg.schedule, self.state
        self.lr = schedule.learning_rate(self.cfg.optim.lr, s.lr_schedule, s.curve, s.warmup_proportion, elapsed,
                                         s.budget_s, state.step, s.max_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        loss_sum, epochs_ended, self.step_ids = accumulate(self.engine, batches, self.accum, self.device)
        self.clock.on_optimizer_step()
        state.step += 1
        state.samples_seen += self.cfg.optim.train_batch_size
        state.epochs_done += epochs_ended
        return loss_sum, epochs_ended

    # ---- actions -----------------------------------------------------------------------------
    def print_step(self, loss_sum: torch.Tensor, elapsed: float) -> None:
        state = self.state
        (loss_all,) = all_sum([float(loss_sum) / (self.accum * self.world)], self.device)  # the loss's one read
        now = time.monotonic()
        rate = (state.samples_seen - self._samples_print) / max(now - self._t_print, 1e-9)
        self._t_print, self._samples_print = now, state.samples_seen
        self.events.emit("train", state.step, elapsed, loss=loss_all, lr=self.lr, samples_per_s=rate,
                         epoch=state.epochs_done, batch_ids=sample_ids_digest(np.concatenate(self.step_ids)))
        if self.rank == 0:
            self.ledger.heartbeat(self.clock, state.step)

    def diverged(self, loss_sum: torch.Tensor) -> None:
        loss = float(loss_sum) / self.accum
        self.events.emit("error", self.state.step, self.clock.elapsed(), loss=loss, lr=self.lr)
        log(self.rank, f"loss is {loss} at step {self.state.step} (lr {self.lr:.3g}) on some rank: training "
                       "diverged; lower --lr or raise --warmup_proportion; the last good checkpoint is kept")

    def validate(self, epoch: int, elapsed: float) -> None:
        state = self.state
        with self.phase("validation"):
            state.last_val_loss = validate(self.engine, self.val_batches, self.device, epoch)
        state.validations_done.append(epoch)
        self.events.emit("validation", state.step, elapsed, val_loss=state.last_val_loss, lr=self.lr, epoch=epoch)

    def save_marker(self, m: float, elapsed: float) -> None:
        state = self.state
        self.save_hf(marker_name(m), {"marker": m})
        state.markers_done.append(m)
        self.events.emit("marker", state.step, elapsed, marker=m, lr=self.lr)
        faults.at("marker", len(state.markers_done))

    def snapshot_meta(self) -> dict:
        cfg, state = self.cfg, self.state
        return {"step": state.step, "train_state": dataclasses.asdict(state), "budget_s": cfg.schedule.budget_s,
                "world_size": self.world, "vocab_size": self.vocab_size, "config": flat_dict(cfg),
                "model_shape": {f: getattr(cfg.model, f) for f in SHAPE_FIELDS}}

    def save_checkpoint(self, why: str, agreed_elapsed: float) -> None:
        """Every save goes through pretrain.async_save: a periodic one is written in the background;
        any other (the stop's) blocks until it is on disk."""
        state, clock = self.state, self.clock
        with self.phase("checkpoint"):
            self.finish_background_save()  # one save in flight at most; then every rank sees the same folder
            state.last_checkpoint_elapsed_s, state.last_checkpoint_epoch = agreed_elapsed, state.epochs_done
            if is_saved(self.run_dir, state.step):
                return  # already saved at this step (a stop at the step this allocation resumed from)
            background = why == "periodic" and self.cfg.checkpoint.async_checkpoints
            self.saver.save(self.engine, state.step, self.snapshot_meta(),
                            {"rng": rng_state(), "loader": self.loader.state_dict()},
                            clock.elapsed() if background else clock.elapsed, why)
            if not background:
                self.finish_background_save()

    def finish_background_save(self) -> None:
        """Collective: the save in flight is on disk and published when every rank returns."""
        self.saved(self.saver.wait())
        barrier()

    def saved(self, done) -> None:
        """A save reached disk: its event (seconds: what a blocking save takes) and the ledger."""
        if done is None:
            return
        self.save_s = done.blocked_s + done.write_s  # sizes the margin before the deadline
        self.events.emit("checkpoint", done.step, self.clock.elapsed(), tag=done.tag, reason=done.reason,
                         seconds=round(self.save_s, 3), blocked_seconds=round(done.blocked_s, 3))
        if self.rank == 0:
            self.ledger.heartbeat(self.clock, self.state.step, saved=True, saved_elapsed_s=done.elapsed_s)

    @contextlib.contextmanager
    def phase(self, name: str):
        """A validation or a save: its wall time goes to the ledger's phase, and the hang watchdog
        allows it longer than a step."""
        with self.clock.phase(name), self.watchdog.phase(name):
            yield

    def save_hf(self, name: str, extra: dict) -> None:
        clock = self.clock
        with self.watchdog.phase("checkpoint"):  # on every rank: the others wait in the barrier
            if self.rank == 0 and not finetune_checkpoint_exists(self.run_dir, name):
                with clock.phase("checkpoint"):
                    path = save_finetune_checkpoint(self.engine.module.hf_model, self.tokenizer, self.run_dir, name,
                                                    {"step": self.state.step, "elapsed_s": clock.elapsed(),
                                                     "progress": clock.progress(), **extra})
                self.events.emit("finetune_checkpoint", self.state.step, clock.elapsed(), name=name, path=path,
                                 **extra)
            barrier()

    # ---- the end of this allocation ------------------------------------------------------------
    def finish(self, d: Decision) -> int:
        state, clock, reason = self.state, self.clock, d.stop
        with self.phase("checkpoint"):
            self.finish_background_save()  # a stop without a save (a diverged loss) still completes it
        finished = reason.finished
        if finished and self.cfg.schedule.finetune_checkpoint_at_end:
            self.save_hf(FINAL_NAME, {"reason": reason})
        # every rank must hold the same weights: compare a checksum across ranks
        checksum = float(sum(p.detach().double().sum() for p in self.engine.module.parameters()))
        hi, neg_lo = all_agree_max([checksum, -checksum], self.device)
        self.events.emit("allocation_end", state.step, clock.elapsed(), reason=reason, cause=d.cause,
                         world_size=self.world, param_checksum_min=-neg_lo, param_checksum_max=hi,
                         **({"restart_count": self.ledger.current.restart_count} if self.rank == 0 else {}))
        if self.rank == 0:
            self.ledger.end_allocation(clock, state.step, reason)
        log(self.rank, f"stopped at step {state.step}, elapsed {clock.elapsed():.1f} s ({clock.progress():.1%} of "
                       f"the budget): {reason} ({d.cause})")
        self.events.close(1 if reason is EndReason.ERROR else 0)
        self.stop.uninstall()
        return reason.exit_status

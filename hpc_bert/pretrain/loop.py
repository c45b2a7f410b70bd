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

import dataclasses
import os
import sys
import time

import numpy as np
import torch

from hpc_bert.data.loader import PretrainingDataLoader, check_dataset, sample_ids_digest
from hpc_bert.data.tokenizer import load_tokenizer
from hpc_bert.pretrain import faults
from hpc_bert.pretrain import budget_change, schedule
from hpc_bert.pretrain.async_save import AsyncCheckpointer
from hpc_bert.pretrain.checkpoint import (find_latest, load_training_checkpoint, set_rng_state,
                                 check_free_space, checkpoint_bytes,
                                 complete_checkpoints, read_meta)
from hpc_bert.pretrain.fault_end import run_guarded
from hpc_bert.pretrain.saving import SaveActions
from hpc_bert.pretrain.watchdog import HangWatchdog
from hpc_bert.pretrain.clock import BudgetClock, Ledger, deadline_margin_s
from hpc_bert.pretrain.elastic import accumulation_steps, fresh_rng_state
from hpc_bert.pretrain.engine import accumulate, deepspeed_config, initialize_engine
from hpc_bert.config.flags import flat_dict
from hpc_bert.pretrain.distributed import (StopCode, StopFlag, agree_step, all_agree_max, all_sum, barrier,
                                           init_distributed, peer_lost, shutdown)
from hpc_bert.runenv import allocation_end, dist_env, job_id, preempt_grace_s
from hpc_bert.pretrain.step_decision import Agreed, Decision, TrainState, after_validation, decide
from hpc_bert.end_reason import EndReason
from hpc_bert.errors import UserError
from hpc_bert.pretrain.events import EventLog
from hpc_bert.pretrain.throughput import throughput_for
from hpc_bert.layout import FINAL_NAME
from hpc_bert.model.bert import MaskedLM, build_hf_model, count_parameters, padded_vocab_size
from hpc_bert.model.compile import prepare_compiled, use_compile
from hpc_bert.model.optim import build_optimizer
from hpc_bert.pretrain.startup import PROCESS_START, check_resume_compatible, document_sep_id
from hpc_bert.runlock import RunLock


def log(rank: int, msg: str) -> None:
    if rank == 0:
        print(f"hpc_bert: {msg}", file=sys.stderr, flush=True)


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
        meta, resume = find_latest(run_dir), None
        if meta is not None:
            check_resume_compatible(meta, cfg, vocab_size)
            # the budget may have changed: which checkpoint, which LR plan (or a one-line refusal)
            metas = [read_meta(run_dir, t) for t in complete_checkpoints(run_dir)]
            resume = budget_change.decide(meta, metas, cfg)
            meta = resume.meta
        if meta is not None and meta["elapsed_s"] >= s.stop_s:
            log(rank, f"{run_dir}: training already finished ({meta['elapsed_s']:.1f} s of {s.stop_s:.1f} s); nothing to do")
            return 0
        if lock is not None and lock.took_over:
            log(rank, f"took over the stale lock of pid {lock.took_over.get('pid')} on {lock.took_over.get('host')}")
        return run_guarded(AllocationRun(cfg, denv, tokenizer, vocab_size, accum, resume, ledger,
                                       PretrainingDataLoader, info))
    finally:  # every exit path, errors included, ends the process group (see shutdown)
        shutdown()
        if lock is not None:
            lock.release()


class AllocationRun(SaveActions):
    """One allocation's training: set up before the clock, then the loop (see ``run``).

    Holds what the loop's actions share (engine, loader, clock, events, state); each action
    is one method, so ``run`` reads agree -> decide -> act from top to bottom.
    """

    def __init__(self, cfg, denv, tokenizer, vocab_size, accum, resume, ledger, loader_cls, info):
        s, v, run_dir = cfg.schedule, cfg.validation, cfg.checkpoint.output_dir
        meta = resume.meta if resume else None
        # --curve wsd: the LR plan in seconds (from the checkpoint, or moved by a budget change)
        self.wsd = resume.plan if resume else (schedule.wsd_plan(s) if s.curve == "wsd" else None)
        self.cfg, self.tokenizer, self.vocab_size, self.accum, self.run_dir = cfg, tokenizer, vocab_size, accum, run_dir
        rank, world = self.rank, self.world = denv.rank, denv.world_size
        device = self.device = init_distributed(denv)
        torch.manual_seed(cfg.runtime.seed + rank)
        hf_model = build_hf_model(cfg.model, vocab_size, pad_token_id=tokenizer.pad_token_id or 0)
        micro = cfg.optim.train_micro_batch_size_per_gpu
        # static masks hold at most max_predictions_per_seq per row; dynamic masks have no cap
        max_predictions = None if cfg.data.dynamic_masking else info.max_predictions_per_seq
        self.document_sep_id = document_sep_id(cfg.model, info, tokenizer, device)
        model = MaskedLM(hf_model, cfg.model.sparse_mask_prediction, max_predictions=max_predictions,
                         document_sep_id=self.document_sep_id,
                         attention_kernel=cfg.model.attention_kernel)
        n_params = self.n_params = count_parameters(model)
        check_free_space(run_dir, checkpoint_bytes(n_params))
        self.loader = loader_cls(cfg.data.dataset_path, micro_batch_size=micro,
                                 rank=rank, world_size=world, seed=cfg.runtime.seed, vocab_size=vocab_size,
                                 dynamic_masking=cfg.data.dynamic_masking, mlm_probability=cfg.data.mlm_probability,
                                 mask_token_id=tokenizer.mask_token_id, prefetch=max(1, cfg.data.num_workers),
                                 info=info)
        val_batches = self.loader.validation_batches(v.validation_micro_batch, v.validation_max_samples) \
            if v.do_validation else []
        self.val_batches = val_batches
        # compiling is startup: it happens before the clock starts and before the engine exists
        self.compile_s = prepare_compiled(model, cfg.runtime, run_dir, device, micro, info.max_seq_length,
                                          lambda msg: log(rank, msg), len(val_batches[0]["input_ids"])
                                          if val_batches else None) if use_compile(cfg.runtime, device) else 0.0
        self.engine, self.optimizer = initialize_engine(model, build_optimizer(model, cfg.optim),
                                                        deepspeed_config(cfg, accum, device))
        self.throughput = throughput_for(cfg, vocab_size, info, device, world)
        self.state = self.restore(resume) if resume else TrainState()
        # ---- the clock starts at the first step; everything before is startup ----------------
        self.elapsed0 = meta["elapsed_s"] if meta else 0.0
        self.lr = self.lr_at(self.elapsed0)  # what a marker due at the first boundary reports
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
        self.decay_start_step = None  # --curve wsd: the step whose checkpoint is the decay start
        startup_s = time.time() - PROCESS_START
        self.ledger = self.open_ledger(ledger, resume, startup_s) if rank == 0 else None
        self._announce(meta, startup_s)

    def _announce(self, meta: dict | None, startup_s: float) -> None:
        """The allocation's first log line and its allocation_start event."""
        cfg, s, rank, world, ledger = self.cfg, self.cfg.schedule, self.rank, self.world, self.ledger
        log(rank, f"model {self.n_params / 1e6:.2f}M params ({cfg.model.encoder_ln_mode}, {cfg.model.num_hidden_layers}x"
                  f"{cfg.model.hidden_size}, vocab {self.vocab_size}, attention per "
                  f"{'row' if self.document_sep_id is None else 'document'}); world size {world} on {self.device}; batch "
                  f"{cfg.optim.train_batch_size} = {cfg.optim.train_micro_batch_size_per_gpu} micro x {self.accum} accum x "
                  f"{world} ranks; budget {s.total_training_time:g} h ({s.budget_s:.0f} s, {s.clock} clock); "
                  + (f"resumed {meta['tag']} at {self.elapsed0:.1f} s ({self.clock.progress():.1%}), saved on "
                     f"{meta['world_size']} ranks" if meta else "fresh start")
                  + f"; startup {startup_s:.1f} s" + (f" (compile {self.compile_s:.1f} s)" if self.compile_s else ""))
        self.events.emit("allocation_start", self.state.step, self.elapsed0, startup_s=startup_s, world_size=world,
                         compile_s=round(self.compile_s, 3), tokens_seen=self.state.tokens_seen,
                         device=self.throughput.device_name, flops_per_token=self.throughput.flops_per_token,
                         **({"job_id": ledger.current.job_id, "restart_count": ledger.current.restart_count,
                             "allocation": len(ledger.allocations)} if rank == 0 else {}))

    def open_ledger(self, ledger: Ledger | None, resume, startup_s: float) -> Ledger:
        """Rank 0: this allocation's record, after the budget change (if any) that it starts under."""
        s, change = self.cfg.schedule, resume.change if resume else None
        ledger = ledger or Ledger(self.run_dir, s.budget_s)
        # the budget now (a fresh start may follow a crash under another one); wsd: the plan's warmup
        ledger.budget_s, ledger.warmup_s = s.budget_s, (self.wsd.warmup_s if self.wsd else ledger.warmup_s)
        if change:
            ledger.record_budget_change(change)
        ledger.begin_allocation(resumed_elapsed_s=self.elapsed0, step=self.state.step, startup_s=startup_s,
                                world_size=self.world, newest_elapsed_s=change["spent_s"] if change else None)
        return ledger

    # ---- the loop ----------------------------------------------------------------------------
    def run(self) -> int:
        try:
            return self.loop()
        except RuntimeError as e:
            if self.watchdog.expired() or not peer_lost(e, self.world):
                raise  # a hang ends in fault_end.run_guarded
            return self.lost_peer(e)

    def loop(self) -> int:
        state, clock = self.state, self.clock
        batches = self.throughput.counting(iter(self.loader))
        self.engine.train()
        clock.start()
        loss_sum, epochs_ended, t_step = None, 0, time.monotonic()
        self.throughput.start(state.samples_seen, state.tokens_seen)
        while True:
            # agree: the boundary's one all-reduce (stop code, elapsed, the step's loss finite?)
            code, elapsed, nonfinite = agree_step(self.stop_code(), clock.elapsed(), loss_sum, self.device)
            if loss_sum is not None:
                self.step_s = time.monotonic() - t_step  # the agreement waited for the step to finish
            self.saved(self.saver.poll())
            self.watchdog.step_boundary(self.step_s if loss_sum is not None else 0.0)
            agreed = Agreed(StopCode(code), elapsed, nonfinite, epochs_ended)
            # decide: a pure function of the agreed values, the config and the state
            d = decide(agreed, self.cfg, state, self.wsd)
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
            if d.checkpoint and d.stop is EndReason.PREEMPTED:
                d = self.within_grace(d)
            if d.checkpoint:
                self.save_checkpoint(d.checkpoint, elapsed, d.decay_start)
            if d.stop:
                break
            t_step = time.monotonic()
            loss_sum, epochs_ended = self.optimizer_step(batches, elapsed)
            faults.at("step", state.step)  # tests: a signal after step N is agreed at N's boundary
        return self.finish(d)

    def within_grace(self, d: Decision) -> Decision:
        """Preempted with only SIGTERM: SIGKILL follows after the partition's grace time. A save that
        would not finish before it is not started (the previous checkpoint stays the newest, and a
        save cut anyway leaves only a .partial folder, removed at the next save). Ranks agree, as the
        save is collective; unknown grace or no save measured yet: try."""
        grace, since = preempt_grace_s(), self.stop.preempted_at
        left = (since + grace - time.monotonic()) if grace and since is not None else float("inf")
        (late,) = all_agree_max([float(self.save_s > 0 and 1.5 * self.save_s + 2.0 > left)], self.device)
        if not late:
            return d
        return dataclasses.replace(d, checkpoint=None, cause=f"{d.cause}; no checkpoint: a save takes "
                                   f"~{self.save_s:.1f} s, {max(left, 0):.1f} s of the {grace:g} s grace time left")

    def stop_code(self) -> StopCode:
        """This rank's request: a signal, or the allocation end closer than a save and a few steps."""
        near_deadline = self.deadline_end is not None and \
            time.time() + deadline_margin_s(self.save_s, self.step_s) >= self.deadline_end
        return max(self.stop.code, StopCode.DEADLINE if near_deadline else StopCode.NONE)

    def lr_at(self, elapsed: float) -> float:
        s = self.cfg.schedule
        return schedule.learning_rate(self.cfg.optim.lr, s.lr_schedule, s.curve, s.warmup_proportion, elapsed,
                                      s.budget_s, self.state.step, s.max_steps, self.wsd)

    def optimizer_step(self, batches, elapsed: float) -> tuple[torch.Tensor, int]:
        """One optimizer step (accum micro batches). No host sync: the loss stays on the device."""
        state = self.state
        self.lr = self.lr_at(elapsed)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        loss_sum, epochs_ended, self.step_ids = accumulate(self.engine, batches, self.accum, self.device)
        self.clock.on_optimizer_step()
        state.step += 1
        state.samples_seen += self.cfg.optim.train_batch_size
        state.epochs_done += epochs_ended
        return loss_sum, epochs_ended

    def restore(self, resume) -> TrainState:
        """Weights, optimizer, loader and RNG of the checkpoint ``resume`` names, and its state; under a new
        budget, rank 0 then sets aside what the change retires (budget_change.set_aside)."""
        meta, rank, c = resume.meta, self.rank, resume.change
        rank_state = load_training_checkpoint(self.engine, self.run_dir, rank, meta["tag"], meta["world_size"],
                                              self.world)
        self.loader.load_state_dict(rank_state["loader"])
        if rank_state["rng"] is None:  # another world size: per-rank streams cannot carry over
            fresh_rng_state(self.cfg.runtime.seed, rank, meta["step"])
        else:
            set_rng_state(rank_state["rng"])
        state = TrainState(**meta["train_state"])
        if c is None or c["kind"] == "lr_jump":
            return state
        state.markers_done = []  # the markers are fractions of the new budget; the old ones are renamed
        if resume.decay_started:  # the decay begins at the resumed checkpoint, which is pinned
            state.decay_start_s = self.wsd.decay_start_s
        barrier()  # every rank has loaded before rank 0 moves anything
        if rank == 0:
            budget_change.set_aside(self.run_dir, resume)
            log(0, f"budget {c['old_budget_s'] / 3600:.4g} h -> {c['new_budget_s'] / 3600:.4g} h ({c['kind']}): "
                   f"resuming {c['from_tag']}; decay {self.wsd.decay_start_s:.0f} -> {self.wsd.end_s:.0f} s from "
                   f"{self.wsd.decay_from:.3g} x peak LR")
        barrier()
        return state

    # ---- actions -----------------------------------------------------------------------------
    def print_step(self, loss_sum: torch.Tensor, elapsed: float) -> None:
        state = self.state
        # the loss's one read; the ranks' real tokens travel with it
        loss_all, tokens = all_sum([float(loss_sum) / (self.accum * self.world), self.throughput.take_pending()],
                                   self.device)
        state.tokens_seen += int(tokens)
        self.events.emit("train", state.step, elapsed, loss=loss_all, lr=self.lr, epoch=state.epochs_done,
                         batch_ids=sample_ids_digest(np.concatenate(self.step_ids)),
                         **self.throughput.fields(state.samples_seen, state.tokens_seen))
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

    # ---- the end of this allocation ------------------------------------------------------------
    def lost_peer(self, e: RuntimeError) -> int:
        """Another rank is gone (its node died): no save is possible, as a save is collective. End
        this allocation's record and ask for a requeue: the next allocation resumes from the newest
        checkpoint on the nodes it gets, and the ledger counts the training after it as lost."""
        if self.rank == 0:
            self.ledger.end_allocation(self.clock, self.state.step, EndReason.CRASH)
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        print(f"hpc_bert: rank {self.rank}: another rank is gone at step {self.state.step} ({why}): no checkpoint "
              "can be saved; requeue to resume from the newest one", file=sys.stderr, flush=True)
        self.stop.uninstall()
        return EndReason.CRASH.exit_status

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
        self.count_tokens()
        self.events.emit("allocation_end", state.step, clock.elapsed(), reason=reason, cause=d.cause,
                         world_size=self.world, tokens_seen=state.tokens_seen, param_checksum_min=-neg_lo,
                         param_checksum_max=hi,
                         **({"restart_count": self.ledger.current.restart_count} if self.rank == 0 else {}))
        if self.rank == 0:
            self.ledger.end_allocation(clock, state.step, reason)
        log(self.rank, f"stopped at step {state.step}, elapsed {clock.elapsed():.1f} s ({clock.progress():.1%} of "
                       f"the budget): {reason} ({d.cause})")
        self.events.close(1 if reason is EndReason.ERROR else 0)
        self.stop.uninstall()
        return reason.exit_status

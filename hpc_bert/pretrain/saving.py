"""The training loop's save actions, mixed into ``loop.AllocationRun``: fine-tune checkpoints
(markers, final), training checkpoints (periodic ones written in the background by async_save,
any other blocking), and what a save reports (event, ledger, the WSD decay start).

Kept apart so that loop.py reads agree -> decide -> act; they use the run's engine, loader,
clock, events, ledger, saver and watchdog, which ``AllocationRun.__init__`` sets up.
"""
from __future__ import annotations

import contextlib
import dataclasses

from hpc_bert.config.flags import flat_dict
from hpc_bert.layout import marker_name
from hpc_bert.pretrain import budget_change, faults
from hpc_bert.pretrain.checkpoint import (finetune_checkpoint_exists, is_saved, rng_state,
                                          save_finetune_checkpoint)
from hpc_bert.pretrain.distributed import all_sum, barrier
from hpc_bert.pretrain.startup import SHAPE_FIELDS


class SaveActions:
    def save_marker(self, m: float, elapsed: float) -> None:
        state = self.state
        self.save_hf(marker_name(m), {"marker": m})
        state.markers_done.append(m)
        self.events.emit("marker", state.step, elapsed, marker=m, lr=self.lr)
        faults.at("marker", len(state.markers_done))

    def snapshot_meta(self) -> dict:
        cfg, state = self.cfg, self.state
        return {"step": state.step, "train_state": dataclasses.asdict(state), "budget_s": cfg.schedule.budget_s,
                **({"wsd": self.wsd.to_dict()} if self.wsd else {}),
                "world_size": self.world, "vocab_size": self.vocab_size, "config": flat_dict(cfg),
                "model_shape": {f: getattr(cfg.model, f) for f in SHAPE_FIELDS}}

    def count_tokens(self) -> None:
        """Add the ranks' real tokens not yet counted to tokens_seen (an all-reduce: every rank calls it)."""
        (tokens,) = all_sum([self.throughput.take_pending()], self.device)
        self.state.tokens_seen += int(tokens)

    def save_checkpoint(self, why: str, agreed_elapsed: float, decay_start: bool = False) -> None:
        """Every save goes through pretrain.async_save: a periodic one is written in the background;
        any other (the stop's) blocks until it is on disk."""
        state, clock = self.state, self.clock
        with self.phase("checkpoint"):
            self.finish_background_save()  # one save in flight at most; then every rank sees the same folder
            state.last_checkpoint_elapsed_s, state.last_checkpoint_epoch = agreed_elapsed, state.epochs_done
            if is_saved(self.run_dir, state.step):
                return  # already saved at this step (a stop at the step this allocation resumed from)
            self.count_tokens()  # the checkpoint's tokens_seen is exact, so a resumed run continues it
            if decay_start:  # the state of any longer run here: kept by the rotation, found by an extension
                state.decay_start_s, self.decay_start_step = self.wsd.decay_start_s, state.step
            meta = {**self.snapshot_meta(), **({"pinned": budget_change.PINNED} if decay_start else {})}
            background = why == "periodic" and self.cfg.checkpoint.async_checkpoints
            self.saver.save(self.engine, state.step, meta,
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
            self.ledger.heartbeat(self.clock, self.state.step, saved=True, saved_elapsed_s=done.elapsed_s,
                                  decay_start_tag=done.tag if done.step == self.decay_start_step else None)

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

"""What is due at an optimizer-step boundary: a pure decision from agreed values.

The loop reads agree -> decide -> act. Every rank agrees (one all-reduce) on the stop code,
the elapsed training seconds and whether the step's loss was non-finite; ``decide`` turns
those, the config and the ``TrainState`` into a ``Decision``, identical on every rank
because its inputs are. No clock, no I/O, no torch: the unit tests call it in microseconds.
After a validation, ``after_validation`` decides early stopping the same way.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from hpc_bert.pretrain import schedule
from hpc_bert.pretrain.clock import budget_progress
from hpc_bert.pretrain.distributed import StopCode
from hpc_bert.end_reason import EndReason


@dataclass
class TrainState:
    """Rank-independent progress, stored in each checkpoint's meta.json."""
    step: int = 0
    samples_seen: int = 0
    tokens_seen: int = 0  # real tokens (padding excluded), all ranks
    epochs_done: int = 0
    validations_done: list[int] = field(default_factory=list)
    markers_done: list[float] = field(default_factory=list)
    last_checkpoint_elapsed_s: float = 0.0
    last_checkpoint_epoch: int = 0
    last_val_loss: float | None = None
    decay_start_s: float | None = None  # --curve wsd: the decay start whose checkpoint is saved (or not needed)


@dataclass(frozen=True)
class Agreed:
    """Values every rank holds after the boundary's all-reduce (plus the loader's epoch count,
    the same on every rank because each rank reads the same number of batches per epoch)."""
    stop_code: StopCode = StopCode.NONE
    elapsed_s: float = 0.0
    nonfinite_loss: bool = False
    epochs_ended: int = 0  # epochs that ended during the step just taken (already in state.epochs_done)


@dataclass(frozen=True)
class Decision:
    validate: tuple[int, ...] = ()     # epoch numbers (1-based) to validate after, in order
    markers: tuple[float, ...] = ()    # fine-tune markers to save now, oldest first
    checkpoint: str | None = None      # why a training checkpoint is saved now ("periodic" or the stop reason)
    stop: EndReason | None = None      # why the allocation ends now, or None to keep training
    cause: str = ""                    # what triggered the stop, for the log
    decay_start: bool = False          # --curve wsd: the decay begins; the checkpoint is pinned


def decide(agreed: Agreed, cfg, state: TrainState, wsd: schedule.WsdPlan | None = None) -> Decision:
    """What is due now. Order of precedence:

    1. A non-finite loss stops with ``error`` and nothing else happens: no validation, no
       marker, no checkpoint, so the weights it produced are never saved and the last good
       checkpoint stays the newest.
    2. Work due at this progress is always done, even when stopping now (a resumed run
       never revisits this boundary): validations for the epochs that just ended, when
       the cadence says so, then every fine-tune marker reached and not yet saved.
    3. The stop: the schedule (``budget_done``, then ``early_exit``) over the agreed stop
       code (the allocation deadline / SIGUSR2 -> ``timeout``, SIGTERM -> ``preempted``,
       SIGINT -> ``signal``). ``after_validation`` may still turn it into ``early_stop``.
    4. A checkpoint: on a stop, one save tagged with the stop's reason; otherwise a
       ``periodic`` one when --num_epochs_between_checkpoints epochs or
       --checkpoint_every_minutes minutes have passed since the last.
    """
    if agreed.nonfinite_loss:
        return Decision(stop=EndReason.ERROR, cause="non-finite loss")
    s, v = cfg.schedule, cfg.validation
    elapsed, progress = agreed.elapsed_s, budget_progress(agreed.elapsed_s, s.budget_s)
    validate = ()
    if v.do_validation:
        ended = range(state.epochs_done - agreed.epochs_ended + 1, state.epochs_done + 1)
        validate = tuple(e for e in ended if schedule.validation_due(
            e, progress, state.validations_done, epochs_begin=v.validation_epochs_begin,
            epochs_middle=v.validation_epochs, epochs_end=v.validation_epochs_end,
            begin_proportion=v.validation_begin_proportion, end_proportion=v.validation_end_proportion))
    markers = tuple(schedule.markers_due(progress, s.finetune_time_markers, state.markers_done))
    stop, cause = schedule.stop_reason(elapsed, s.budget_s, s.early_exit_s), "schedule"
    if stop is None and agreed.stop_code != StopCode.NONE:
        code = StopCode(agreed.stop_code)
        stop, cause = code.reason, code.cause
    decay_start = wsd is not None and elapsed >= wsd.decay_start_s and state.decay_start_s != wsd.decay_start_s
    if stop is not None:
        checkpoint = stop
    elif decay_start:
        checkpoint = "decay_start"
    elif periodic_checkpoint_due(cfg.checkpoint, state, elapsed):
        checkpoint = "periodic"
    else:
        checkpoint = None
    return Decision(validate=validate, markers=markers, checkpoint=checkpoint, stop=stop, cause=cause,
                    decay_start=decay_start)


def periodic_checkpoint_due(ck, state: TrainState, elapsed_s: float) -> bool:
    return (state.epochs_done - state.last_checkpoint_epoch >= ck.num_epochs_between_checkpoints
            or elapsed_s - state.last_checkpoint_elapsed_s >= ck.checkpoint_every_minutes * 60)


def after_validation(decision: Decision, val_loss: float, elapsed_s: float, cfg) -> Decision:
    """The decision once a validation loss is known: ``early_stop`` (ABB's rule) takes over any
    other stop, since training is then finished rather than interrupted."""
    v = cfg.validation
    if not (v.use_early_stopping and schedule.early_stop(elapsed_s, val_loss, v.early_stop_time,
                                                        v.early_stop_eval_loss)):
        return decision
    return dataclasses.replace(decision, stop=EndReason.EARLY_STOP, checkpoint=EndReason.EARLY_STOP,
                               cause=f"validation loss {val_loss:.3f}")

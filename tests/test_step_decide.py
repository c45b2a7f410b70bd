"""The step decision: every stop reason, their order, validation cadence, markers exactly once,
periodic checkpoints by epochs and by minutes. Pure: no DeepSpeed, no clock, milliseconds."""
import os
import signal

import pytest
import torch

from hpc_bert.config.pretrain import (CheckpointConfig, PretrainConfig, ScheduleConfig, ValidationConfig)
from hpc_bert.pretrain.distributed import StopCode, StopFlag, agree_step
from hpc_bert.pretrain.step_decision import Agreed, Decision, TrainState, after_validation, decide

STEP_S = 10.0


def config(steps=24, markers=(), validation=None, early_exit_steps=None, **ck):
    hours = steps * STEP_S / 3600
    return PretrainConfig(
        schedule=ScheduleConfig(total_training_time=hours, finetune_time_markers=tuple(markers),
                                early_exit_time_marker=None if early_exit_steps is None
                                else early_exit_steps * STEP_S / 3600),
        validation=validation or ValidationConfig(),
        checkpoint=CheckpointConfig(**{"checkpoint_every_minutes": 1000.0, **ck}))


def simulate(cfg, steps_per_epoch=1, codes=None, nonfinite_at=None, val_loss=lambda step: 1.0, state=None):
    """Drive decide() the way the trainer's loop does, under a simulated clock; record what it did."""
    codes = codes or {}
    state = state or TrainState()
    did = {"validate": [], "marker": [], "checkpoint": [], "stop": None}
    epochs_ended = 0
    while True:
        elapsed = state.step * STEP_S
        d = decide(Agreed(codes.get(state.step, StopCode.NONE), elapsed, state.step == nonfinite_at, epochs_ended),
                   cfg, state)
        for e in d.validate:
            state.validations_done.append(e)
            did["validate"].append((state.step, e))
            d = after_validation(d, val_loss(state.step), elapsed, cfg)
        for m in d.markers:
            state.markers_done.append(m)
            did["marker"].append((state.step, m))
        if d.checkpoint:
            state.last_checkpoint_elapsed_s, state.last_checkpoint_epoch = elapsed, state.epochs_done
            did["checkpoint"].append((state.step, d.checkpoint))
        if d.stop:
            did["stop"] = (state.step, d.stop, d.cause)
            return did, state
        state.step += 1
        epochs_ended = int(state.step % steps_per_epoch == 0)
        state.epochs_done += epochs_ended


def test_a_plain_budget_ends_with_one_checkpoint_at_the_last_step():
    did, _ = simulate(config())
    assert did["stop"] == (24, "budget_done", "schedule")
    assert did["checkpoint"] == [(24, "budget_done")]
    assert did["validate"] == [] and did["marker"] == []


def test_non_finite_loss_stops_before_anything_else():
    cfg = config(markers=(0.5,), validation=ValidationConfig(do_validation=True, validation_epochs=1),
                 checkpoint_every_minutes=0.1)
    state = TrainState(step=12, epochs_done=12, validations_done=list(range(1, 12)), markers_done=[])
    # a marker, a validation, a periodic checkpoint and a signal are all due: none happens
    d = decide(Agreed(StopCode.TIMEOUT, 120.0, True, 1), cfg, state)
    assert d == Decision(stop="error", cause="non-finite loss")
    did, _ = simulate(cfg, nonfinite_at=5)
    assert did["stop"] == (5, "error", "non-finite loss")
    assert all(step < 5 for step, _ in did["checkpoint"])   # the last good checkpoint stays the newest


@pytest.mark.parametrize("code, reason, cause", [
    (StopCode.SIGNAL, "signal", "SIGINT"), (StopCode.PREEMPTED, "preempted", "SIGTERM"),
    (StopCode.TIMEOUT, "timeout", "SIGUSR2"), (StopCode.DEADLINE, "timeout", "allocation deadline")])
def test_each_stop_code_names_its_reason_and_saves(code, reason, cause):
    did, _ = simulate(config(), codes={7: code})
    assert did["stop"] == (7, reason, cause)
    assert did["checkpoint"] == [(7, reason)]


def test_the_schedule_outranks_a_signal_and_the_budget_outranks_early_exit():
    cfg = config(early_exit_steps=10)
    assert simulate(cfg, codes={10: StopCode.TIMEOUT})[0]["stop"] == (10, "early_exit", "schedule")
    both = config(steps=24, early_exit_steps=24)
    assert simulate(both)[0]["stop"] == (24, "budget_done", "schedule")
    # the largest code wins once ranks agree on the max
    assert max(StopCode.SIGNAL, StopCode.DEADLINE, StopCode.TIMEOUT) is StopCode.DEADLINE


def test_work_due_at_a_stop_is_done_before_it():
    """A resumed run never revisits the boundary it stopped at: its validation and marker happen first."""
    cfg = config(markers=(0.25,), validation=ValidationConfig(do_validation=True, validation_epochs=3,
                                                             validation_epochs_begin=3, validation_epochs_end=3))
    did, _ = simulate(cfg, codes={6: StopCode.PREEMPTED})
    assert did["validate"] == [(3, 3), (6, 6)]
    assert did["marker"] == [(6, 0.25)]
    assert did["checkpoint"] == [(6, "preempted")] and did["stop"][:2] == (6, "preempted")


def test_validation_cadence_dense_at_begin_and_end_sparse_between():
    v = ValidationConfig(do_validation=True, validation_epochs_begin=1, validation_epochs=4, validation_epochs_end=2,
                         validation_begin_proportion=0.125, validation_end_proportion=0.25)
    did, _ = simulate(config(steps=24, validation=v))
    # begin: progress < 3/24 -> every epoch; middle every 4th; end (progress >= 18/24) every 2nd
    assert [step for step, _ in did["validate"]] == [1, 2, 4, 8, 12, 16, 18, 20, 22, 24]
    did, _ = simulate(config(steps=24, validation=v), steps_per_epoch=3)
    # epoch 1 ends at progress 3/24, already the middle phase: epochs 4, then 6 and 8 in the end phase
    assert did["validate"] == [(12, 4), (18, 6), (24, 8)]


def test_markers_exactly_once_even_when_a_step_jumps_past_several():
    cfg = config(steps=24, markers=(0.3, 0.6, 1.0))
    did, _ = simulate(cfg)
    assert did["marker"] == [(8, 0.3), (15, 0.6), (24, 1.0)]
    state = TrainState(step=20, markers_done=[])
    assert decide(Agreed(elapsed_s=200.0), cfg, state).markers == (0.3, 0.6)
    # resumed after saving 0.3 and 0.6: neither repeats
    did, _ = simulate(cfg, state=TrainState(step=16, markers_done=[0.3, 0.6]))
    assert did["marker"] == [(24, 1.0)]


def test_periodic_checkpoints_by_minutes():
    did, _ = simulate(config(checkpoint_every_minutes=1.5))       # 90 s = 9 steps
    assert did["checkpoint"] == [(9, "periodic"), (18, "periodic"), (24, "budget_done")]


def test_periodic_checkpoints_by_epochs():
    did, _ = simulate(config(num_epochs_between_checkpoints=2), steps_per_epoch=5)
    assert did["checkpoint"] == [(10, "periodic"), (20, "periodic"), (24, "budget_done")]


def test_a_resumed_boundary_does_not_save_again():
    cfg = config(checkpoint_every_minutes=1.5, markers=(0.25,))
    state = TrainState(step=9, markers_done=[0.25], last_checkpoint_elapsed_s=90.0)
    assert decide(Agreed(elapsed_s=90.0), cfg, state) == Decision(cause="schedule")


def test_early_stop_after_validation_takes_over_and_waits_for_its_time():
    v = ValidationConfig(do_validation=True, validation_epochs=1, validation_epochs_begin=1, validation_epochs_end=1,
                         use_early_stopping=True, early_stop_time=1.0, early_stop_eval_loss=5.0)
    did, _ = simulate(config(validation=v), val_loss=lambda step: 9.0)
    assert did["stop"] == (6, "early_stop", "validation loss 9.000")   # first validation at >= 60 s
    assert did["checkpoint"] == [(6, "early_stop")]
    did, _ = simulate(config(validation=v), val_loss=lambda step: 9.0 if step < 12 else 1.0,
                      codes={3: StopCode.TIMEOUT})
    assert did["stop"][:2] == (3, "timeout")                            # too early for early stopping
    timeout = Decision(checkpoint="timeout", stop="timeout", cause="SIGUSR2")
    assert after_validation(timeout, 9.0, 600.0, config(validation=v)).stop == "early_stop"
    assert after_validation(timeout, 1.0, 600.0, config(validation=v)) == timeout
    off = ValidationConfig(do_validation=True, use_early_stopping=False)
    assert after_validation(timeout, 9.0, 600.0, config(validation=off)) == timeout


def test_stop_flag_keeps_the_largest_named_code():
    flag = StopFlag().install()
    try:
        os.kill(os.getpid(), signal.SIGUSR2)
        os.kill(os.getpid(), signal.SIGINT)
        assert flag.code is StopCode.TIMEOUT and flag.code.reason == "timeout"
    finally:
        flag.uninstall()


def test_agree_step_reads_finiteness_not_the_loss():
    assert agree_step(StopCode.PREEMPTED, 12.5, torch.tensor(3.0, dtype=torch.float64), "cpu") == (2, 12.5, False)
    assert agree_step(0, 1.0, torch.tensor(float("nan")), "cpu")[2] is True
    assert agree_step(0, 1.0, torch.tensor(float("inf")), "cpu")[2] is True
    assert agree_step(0, 0.0, None, "cpu") == (0, 0.0, False)

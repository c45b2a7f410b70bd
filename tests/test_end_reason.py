"""One vocabulary of end reasons: every reason the trainer can write is an EndReason member,
with the exit status the scheduler needs."""
from __future__ import annotations

import json

from hpc_bert.config.pretrain import PretrainConfig, ValidationConfig
from hpc_bert.end_reason import EndReason
from hpc_bert.errors import EXIT_REQUEUE
from hpc_bert.pretrain import schedule
from hpc_bert.pretrain.distributed import SIGNAL_REASONS, StopCode
from hpc_bert.pretrain.step_decision import Agreed, Decision, TrainState, after_validation, decide


def test_members_keep_the_ledger_strings_and_their_exit_status():
    assert [r.value for r in EndReason] == ["budget_done", "early_exit", "early_stop", "timeout", "preempted",
                                            "signal", "crash", "error", "cancelled", "hang", "disk_full"]
    assert json.dumps({"end_reason": EndReason.TIMEOUT}) == '{"end_reason": "timeout"}'
    assert f"{EndReason.PREEMPTED}" == "preempted" and EndReason("crash") is EndReason.CRASH
    expected = {"budget_done": 0, "early_exit": 0, "early_stop": 0, "error": 1, "cancelled": 0,
                "timeout": EXIT_REQUEUE, "preempted": EXIT_REQUEUE, "signal": EXIT_REQUEUE, "crash": EXIT_REQUEUE,
                "hang": EXIT_REQUEUE, "disk_full": EXIT_REQUEUE}
    assert {r.value: r.exit_status for r in EndReason} == expected
    assert {r for r in EndReason if r.finished} == {EndReason.BUDGET_DONE, EndReason.EARLY_EXIT, EndReason.EARLY_STOP}


def test_every_reason_the_trainer_writes_is_a_member():
    written = {StopCode(c).reason for c in StopCode if c != StopCode.NONE} | set(SIGNAL_REASONS.values())
    written |= {schedule.stop_reason(10.0, 10.0, None), schedule.stop_reason(5.0, 10.0, 4.0)}
    cfg = PretrainConfig(validation=ValidationConfig(use_early_stopping=True, early_stop_eval_loss=1.0))
    written.add(decide(Agreed(nonfinite_loss=True, elapsed_s=1.0), cfg, TrainState()).stop)
    written.add(after_validation(Decision(), 5.0, 1e9, cfg).stop)
    assert all(isinstance(r, EndReason) for r in written), written
    # the ledger writes CRASH for a dead allocation; the launcher writes CANCELLED after submit --cancel;
    # the loop's guard writes HANG and DISK_FULL (a collective timed out past the watchdog, or a write
    # failed for lack of space)
    assert written == set(EndReason) - {EndReason.CRASH, EndReason.CANCELLED, EndReason.HANG, EndReason.DISK_FULL}

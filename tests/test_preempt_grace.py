"""Preemption with only SIGTERM, then SIGKILL after the partition's grace time: the trainer saves
when the save fits in the grace time left, and otherwise does not start a save it cannot finish
(the previous checkpoint stays the newest; the next allocation resumes from it and the ledger
counts the work after it as lost). A real tiny BERT on CPU, simulated clock."""
import json
import os

import pytest

from hpc_bert.errors import EXIT_REQUEUE
from hpc_bert.pretrain.clock import Ledger
from hpc_bert.pretrain.events import read_events
from hpc_bert.runenv import GRACE_ENV
from pretrain_fixtures import simulated_flags, train

pytestmark = pytest.mark.slow

STEP_S = 10.0  # simulated seconds per step; periodic checkpoints every 1.5 min = 9 steps
HOURS = 24 * STEP_S / 3600


def checkpoints(run) -> list:
    return [(e["step"], e["reason"]) for e in read_events(str(run)) if e["event"] == "checkpoint"]


def test_save_that_does_not_fit_the_grace_time_is_not_started(tmp_path, inputs):
    run = tmp_path / "run"
    r = train(simulated_flags(run, inputs, HOURS, STEP_S), env_extra={"HPC_BERT_FAULTS": "term@step:12",
                                                                     GRACE_ENV: "0.001"})
    assert r.returncode == EXIT_REQUEUE, r.stderr[-3000:]
    assert checkpoints(run) == [(9, "periodic")]  # the periodic save measured a save; none at the SIGTERM
    assert json.load(open(run / "checkpoints" / "latest.json"))["step"] == 9
    assert not [n for n in os.listdir(run / "checkpoints") if n.endswith(".partial")]
    assert "preempted (SIGTERM; no checkpoint: a save takes" in r.stderr and "grace time left" in r.stderr
    assert Ledger.load(str(run)).current.end_reason == "preempted"
    r = train(simulated_flags(run, inputs, HOURS, STEP_S))  # the requeued allocation
    assert r.returncode == 0, r.stderr[-3000:]
    first, second = Ledger.load(str(run)).allocations
    assert second.step_begin == 9 and second.end_reason == "budget_done"
    assert first.lost_s == pytest.approx(3 * STEP_S)  # steps 10-12 were trained, then lost


def test_save_that_fits_the_grace_time_is_made(tmp_path, inputs):
    run = tmp_path / "run"
    r = train(simulated_flags(run, inputs, HOURS, STEP_S), env_extra={"HPC_BERT_FAULTS": "term@step:12",
                                                                     GRACE_ENV: "600"})
    assert r.returncode == EXIT_REQUEUE, r.stderr[-3000:]
    assert checkpoints(run) == [(9, "periodic"), (12, "preempted")]
    assert Ledger.load(str(run)).current.elapsed_saved_s == pytest.approx(12 * STEP_S)

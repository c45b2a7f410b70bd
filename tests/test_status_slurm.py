"""submit --cancel (and status after it) on the suite's real SLURM (no accounting:
squeue / scontrol only). Timing assertions bound, never pin (SLURM's ~30 s signal jitter)."""
import json
import os
import subprocess
import sys

import pytest

from hpc_bert.layout import CHAIN_FILE
from hpc_bert.pretrain.clock import Ledger
from hpc_bert.pretrain.events import read_events
from pretrain_fixtures import REPO
from slurm_fixture import wait_until
from test_submit_slurm import inputs, job_ids, ledger_done, pretrain_flags, queued, submit  # noqa: F401

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def status(run) -> str:
    r = subprocess.run([sys.executable, "-m", "hpc_bert.status", str(run)], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_cancel_saves_then_resubmit_continues_the_ledger(slurm_cluster, inputs, tmp_path):
    run = str(tmp_path / "run")
    args = ["--budget", "0.02", "--allocation_hours", "0.1", "--run_dir", run, "--partition", "debug",
            "--cpus_per_task", "1", "--glue", inputs["grid"], "--finetune_checkpoint_at_end",
            *pretrain_flags(inputs)]
    r = submit(args)
    assert r.returncode == 0, r.stderr
    ids = job_ids(r.stdout)
    wait_until(lambda: sum(e["event"] == "train" for e in read_events(run)) >= 2, 180, "training to run", interval=1)
    c = subprocess.run([sys.executable, "-m", "hpc_bert.submit", "--cancel", run], cwd=REPO, capture_output=True,
                       text=True, timeout=600)
    assert c.returncode == 0, c.stderr
    assert "sent USR2" in c.stdout
    wait_until(lambda: not queued(slurm_cluster, set(ids.values())), 120, "the cancelled chain to leave the queue")
    led = Ledger.load(run)
    assert len(led.allocations) == 1 and led.current.end_reason == "timeout"  # stopped by its signal, saved
    latest = json.load(open(os.path.join(run, "checkpoints", "latest.json")))
    assert latest["step"] == led.current.step_last  # the checkpoint holds the last step trained
    assert not os.path.exists(os.path.join(run, "glue"))  # GLUE never started
    assert "cancelled by submit --cancel" in status(run)
    r = submit(args)  # the same command continues the budget
    assert r.returncode == 0, r.stderr
    led = wait_until(lambda: ledger_done(run), 400, "the resubmitted budget to be spent", interval=2)
    first, second = led.allocations[0], led.allocations[1]
    assert len(led.allocations) == 2, [a.end_reason for a in led.allocations]
    assert (first.end_reason, second.end_reason) == ("timeout", "budget_done")
    assert second.elapsed_begin_s == pytest.approx(latest["elapsed_s"], abs=1e-6)  # resumed the cancel's checkpoint
    assert first.lost_s < 1.0  # only the tail of the stop-save: no training lost, none counted twice
    assert second.step_begin == first.step_last
    wait_until(lambda: os.path.exists(os.path.join(run, "glue_results.md")), 400, "the GLUE table", interval=2)

"""python -m hpc_bert.status and submit --cancel on the suite's real SLURM (no accounting:
squeue / scontrol only). Timing assertions bound, never pin (SLURM's ~30 s signal jitter)."""
import json
import os
import re
import subprocess
import sys

import pytest

from hpc_bert.layout import CHAIN_FILE
from hpc_bert.pretrain.clock import Ledger
from hpc_bert.pretrain.events import read_events
from pretrain_fixtures import REPO
from slurm_fixture import sbatch, scancel, wait_until
from test_submit_slurm import inputs, job_ids, last_line, ledger_done, pretrain_flags, queued, submit  # noqa: F401

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def status(run) -> str:
    r = subprocess.run([sys.executable, "-m", "hpc_bert.status", str(run)], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_status_while_the_chain_pends_behind_another_job_and_after_it_ran(slurm_cluster, inputs, tmp_path):
    blocker = sbatch(slurm_cluster, "sleep 300\n", "-p", "debug", "-N2", "--exclusive", cwd=tmp_path, name="blocker")
    wait_until(lambda: "RUNNING" in slurm_cluster.run("squeue", "-h", "-j", str(blocker), "-o", "%T",
                                                      check=False).stdout, 60, "the blocker to run")
    run = tmp_path / "run"
    try:
        r = submit(["--budget", "0.004", "--allocation_hours", "0.1", "--run_dir", str(run), "--partition", "debug",
                    "--cpus_per_task", "1", "--glue", inputs["grid"], "--finetune_checkpoint_at_end",
                    *pretrain_flags(inputs)])
        assert r.returncode == 0, r.stderr
        ids = job_ids(r.stdout)
        chain = json.load(open(run / CHAIN_FILE))
        assert chain["jobs"] == {"pretrain": ids["pretrain"], "glue_array": ids["array"],
                                 "aggregate": ids["aggregate"]}
        behind = re.compile(rf"pretrain job {ids['pretrain']}: pending; waiting for (Resources|Priority)")
        out = wait_until(lambda: (lambda s: s if behind.search(s) and "waiting for Dependency" in s else None)(
            status(run)), 60, "status to show the chain pending behind the blocker")
        assert f"glue_array job {ids['array']}: pending; waiting for Dependency; 0 done, 0 running, 4 pending" in out
        assert f"aggregate job {ids['aggregate']}: pending; waiting for Dependency" in out
        assert "no ledger yet" in out
    finally:
        scancel(slurm_cluster, blocker)
    out = wait_until(lambda: (lambda s: s if f"pretrain job {ids['pretrain']}: running; on n" in s else None)(
        status(run)), 120, "status to show the running job and its node")
    led = wait_until(lambda: ledger_done(str(run)), 300, "the budget to be spent", interval=2)
    wait_until(lambda: os.path.exists(run / "glue_results.md"), 400, "the GLUE table", interval=2)
    wait_until(lambda: not queued(slurm_cluster, set(ids.values())), 120, "the chain to leave the queue")
    out = status(run)
    assert "budget_done" in out and "FAILED" not in out, out
    pre_line = next(x for x in out.splitlines() if f"pretrain job {ids['pretrain']}:" in x)
    assert "completed" in pre_line or "the ledger says the budget is done" in pre_line, out
    glue_line = next(x for x in out.splitlines() if f"glue_array job {ids['array']}:" in x)
    assert "0 running, 0 pending, 0 failed" in glue_line or "4 of 4 GLUE runs wrote results" in glue_line, out
    assert led.current.end_reason == "budget_done"


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
    assert len(led.allocations) == 1 and led.current.end_reason == "cancelled"  # stopped by the cancel, saved
    latest = json.load(open(os.path.join(run, "checkpoints", "latest.json")))
    assert latest["step"] == led.current.step_last  # the checkpoint holds the last step trained
    assert not os.path.exists(os.path.join(run, "glue"))  # GLUE never started
    end = last_line(os.path.join(run, "submitit", f"{ids['pretrain']}_0_log.err"))
    assert end.startswith("hpc_bert: stopped by python -m hpc_bert.submit --cancel after saving a checkpoint "
                          f"at step {latest['step']}"), end
    out = status(run)
    assert "cancelled by submit --cancel" in out and "FAILED" not in out, out
    pre_line = next(x for x in out.splitlines() if f"pretrain job {ids['pretrain']}:" in x)
    assert "cancelled by submit --cancel" in pre_line, out
    glue_line = next(x for x in out.splitlines() if f"glue_array job {ids['array']}:" in x)
    assert " 0 failed" in glue_line or "no longer known" in glue_line, out  # cancelled tasks are not failures
    r = submit(args)  # the same command continues the budget
    assert r.returncode == 0, r.stderr
    led = wait_until(lambda: ledger_done(run), 400, "the resubmitted budget to be spent", interval=2)
    first, second = led.allocations[0], led.allocations[1]
    assert len(led.allocations) == 2, [a.end_reason for a in led.allocations]
    assert (first.end_reason, second.end_reason) == ("cancelled", "budget_done")
    assert (led.totals()["requeues"], led.totals()["resubmissions"]) == (0, 1)  # a new job, not a requeue
    assert second.elapsed_begin_s == pytest.approx(latest["elapsed_s"], abs=1e-6)  # resumed the cancel's checkpoint
    assert first.lost_s < 1.0  # only the tail of the stop-save: no training lost, none counted twice
    assert second.step_begin == first.step_last
    wait_until(lambda: os.path.exists(os.path.join(run, "glue_results.md")), 400, "the GLUE table", interval=2)

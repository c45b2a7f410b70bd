"""The queue side of status without a scheduler: job-state lines, array task ranges, the budget ETA,
and the aggregation's one line when the chain failed upstream."""
import json

import pytest

from hpc_bert.launch import queue
from hpc_bert.launch.queue import JobState, describe
from hpc_bert.launch.status import budget_eta
from hpc_bert.pretrain.clock import BudgetClock, Ledger


@pytest.mark.parametrize("spec, n", [("3", 1), ("2-5", 4), ("1,4-7%16", 5), ("0-539%16", 540)])
def test_array_task_ranges(spec, n):
    assert queue._count_range(spec) == n


def test_job_lines_say_why_where_and_how_often():
    assert describe("pretrain", JobState("12", "PENDING", "Resources")) == "pretrain job 12: pending; waiting for Resources"
    assert describe("pretrain", JobState("12", "RUNNING", "None", "n1", restarts=2)) == \
        "pretrain job 12: running; on n1; requeued 2 times"
    line = describe("glue_array", JobState("13", "RUNNING", "", "n2", tasks={"done": 3, "running": 1, "pending": 4,
                                                                            "failed": 1}))
    assert line == "glue_array job 13: running; on n2; 3 done, 1 running, 4 pending, 1 failed tasks"
    assert "exit code 1:0" in describe("aggregate", JobState("14", "FAILED", exit_code="1:0"))
    assert JobState("14", "FAILED").failed and JobState("14", "NODE_FAIL").failed
    assert not JobState("14", "COMPLETED").failed
    assert not JobState("14", "CANCELLED").failed  # stopped on purpose (scancel, submit --cancel), not a failure


def test_budget_eta_from_rate_and_allocation_length(tmp_path):
    now = [1000.0]
    led = Ledger(str(tmp_path), budget_s=7200)
    led.begin_allocation(resumed_elapsed_s=0, step=0, startup_s=60.0, job_id="11", restart_count=0)
    led.current.start_wall = 1000.0
    c = BudgetClock(7200, now=lambda: now[0])
    c.start()
    now[0] = 1000.0 + 1800  # half an hour of wall time trained 1800 s of budget: rate 1
    led.heartbeat(c, 100)
    led.current.end_wall = now[0]  # the heartbeat's wall time, on this test's clock
    line = budget_eta(led, led.totals(), {"allocation_hours": 1.0}, now=1000.0 + 1800)
    # 5400 s left; 1800 s left in this allocation, then 3600 s at 3540 useful s per allocation: 2 more
    assert "remaining training time 1.500 h (~1.50 h of allocation at the current rate, 2 more allocations of 1 h" \
        in line, line
    assert "budget ETA" in line


def test_aggregation_names_the_failed_pretraining_job(tmp_path):
    run = tmp_path / "run"
    (run / "submitit").mkdir(parents=True)
    (run / "chain.json").write_text(json.dumps({"cluster": "slurm", "jobs": {"pretrain": "41", "glue_array": "42",
                                                                             "aggregate": "43"},
                                                "logs": str(run / "submitit"), "glue_tasks": 4}))
    (run / "submitit" / "41_0_log.err").write_text(
        "hpc_bert: error: shard data/train_shard_0.hdf5 is truncated: re-create it\nTraceback ...\n"
        "RuntimeError: pretraining exited with status 2: see the job's log\n")
    msg = queue.upstream_failure(str(run))
    assert msg.startswith("pretraining job 41 failed (shard data/train_shard_0.hdf5 is truncated: re-create it)")
    assert str(run / "submitit" / "41_0_log.err") in msg and "42 was cancelled" in msg
    (run / "glue" / "final" / "SST-2" / "1").mkdir(parents=True)
    (run / "glue" / "final" / "SST-2" / "1" / "results.json").write_text("{}")
    assert queue.upstream_failure(str(run)) is None  # results exist: the table reports what finished


def test_watch_refreshes_and_rejects_a_bad_interval(tmp_path):
    import subprocess
    import sys
    from test_status import REPO, make_run
    run = tmp_path / "run"
    run.mkdir()
    make_run(run)
    r = subprocess.run([sys.executable, "-m", "hpc_bert.status", str(run), "--watch", "0.2", "--watch_count", "2"],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("refreshed ") == 2 and r.stdout.count("budget: 0.0277778 h") == 2
    r = subprocess.run([sys.executable, "-m", "hpc_bert.status", str(run), "--watch", "0"],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 2 and "--watch 0" in r.stderr and len(r.stderr.strip().splitlines()) == 1

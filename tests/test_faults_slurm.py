"""Faults of a real cluster on the suite's real SLURM: preemption with only SIGTERM (the debug
partition's PreemptMode=REQUEUE and GraceTime=20, preempted by the urgent partition), and a node
lost in the middle of a 2-node run. Timing assertions bound, never pin."""
import json
import os
import re
import signal

import pytest

from hpc_bert.pretrain.clock import Ledger
from hpc_bert.pretrain.events import read_events
from slurm_fixture import sbatch, wait_until
from test_submit_slurm import inputs, job_ids, last_line, ledger_done, pretrain_flags, submit  # noqa: F401

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def events(run, kind):
    return [e for e in read_events(run) if e["event"] == kind]


def test_sigterm_only_preemption_saves_within_the_grace_time_and_requeues(slurm_cluster, inputs, tmp_path):
    run = str(tmp_path / "run")
    r = submit(["--budget", "0.012", "--allocation_hours", "0.1", "--run_dir", run, "--partition", "debug",
                "--cpus_per_task", "1", *pretrain_flags(inputs)])
    assert r.returncode == 0, r.stderr
    assert "grace time" not in r.stdout  # the tiny model's save fits in the partition's 20 s
    pre = job_ids(r.stdout)["pretrain"]
    wait_until(lambda: len(events(run, "train")) >= 2, 180, "training to start", interval=1)
    sbatch(slurm_cluster, "sleep 5\n", "-p", "urgent", "-N2", "--exclusive", cwd=tmp_path, name="urgent")
    led = wait_until(lambda: ledger_done(run), 400, "the budget to be spent after preemption", interval=2)
    first, second = led.allocations[0], led.allocations[1]
    assert first.end_reason == "preempted" and first.job_id == second.job_id == pre
    assert (led.totals()["requeues"], led.totals()["resubmissions"]) >= (1, 0)  # requeued by SLURM, same job
    saves = [e for e in events(run, "checkpoint") if e["reason"] == "preempted"]
    assert saves and saves[0]["step"] == first.step_last  # saved at the SIGTERM, within the grace time
    assert second.elapsed_begin_s == pytest.approx(first.elapsed_saved_s, abs=0.5) and first.lost_s < 1.0
    end = [e for e in events(run, "allocation_end") if e["reason"] == "preempted"][0]
    assert end["cause"] == "SIGTERM"  # only SIGTERM reached it: no user signal at preemption
    assert last_line(os.path.join(run, "submitit", f"{pre}_0_log.err"))  # no traceback in the job's log


def test_submit_says_when_the_save_does_not_fit_the_grace_time(slurm_cluster, inputs, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"event": "checkpoint", "step": 9, "elapsed_s": 90,
                                                   "progress": 0.1, "seconds": 45.0}) + "\n")
    r = submit(["--budget", "1", "--allocation_hours", "1", "--run_dir", str(run), "--partition", "debug",
                "--dry_run", *pretrain_flags(inputs)])
    assert r.returncode == 0, r.stderr
    notes = [x for x in r.stdout.splitlines() if "grace time" in x]
    assert len(notes) == 1 and "grace time is 20 s but a checkpoint save takes ~45.0 s" in notes[0], r.stdout


def task_pids(job_id: str, node: str) -> list[int]:
    """The processes SLURM started for ``job_id`` on ``node`` (both test nodes share this host)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if f"SLURM_JOB_ID={job_id}".encode() in env and f"SLURMD_NODENAME={node}".encode() in env \
                and b"SLURM_STEP_ID=0" in env:
            pids.append(int(pid))
    return pids


def test_node_lost_mid_run_is_requeued_and_resumes(slurm_cluster, inputs, tmp_path):
    run = str(tmp_path / "run")
    r = submit(["--budget", "0.015", "--allocation_hours", "0.1", "--run_dir", run, "--partition", "debug",
                "--nodes", "2", "--cpus_per_task", "1", *pretrain_flags(inputs, train_micro_batch_size_per_gpu=4)])
    assert r.returncode == 0, r.stderr
    pre = job_ids(r.stdout)["pretrain"]
    saved = wait_until(lambda: events(run, "checkpoint"), 240, "a periodic checkpoint of the 2-node run", interval=1)
    wait_until(lambda: any(e["step"] > saved[0]["step"] for e in events(run, "train")), 60, "training past it")
    victims = task_pids(pre, "n2")
    assert victims, "no process of the job on n2"
    try:
        for pid in victims:  # the node dies: no signal, no save
            os.kill(pid, signal.SIGKILL)
        slurm_cluster.run("scontrol", "update", "nodename=n2", "state=down", "reason=hpc_bert node-loss test")
        led = wait_until(lambda: (lambda x: x if x and len(x.allocations) >= 2 else None)(Ledger.load(run)), 240,
                         "the requeued job to resume", interval=2)
    finally:
        slurm_cluster.run("scontrol", "update", "nodename=n2", "state=resume", check=False)
    led = wait_until(lambda: ledger_done(run), 400, "the budget to be spent after the node loss", interval=2)
    first, second = led.allocations[0], led.allocations[1]
    assert first.end_reason == "crash" and first.world_size == 2 and second.job_id == first.job_id == pre
    assert second.restart_count >= 1 and led.totals()["resubmissions"] == 0  # requeued, not resubmitted
    assert 0 < second.elapsed_begin_s <= first.elapsed_last_s  # resumed from a checkpoint, not from scratch
    assert first.lost_s == pytest.approx(first.elapsed_last_s - second.elapsed_begin_s, abs=1e-6)
    assert first.lost_s > 0  # the training after the checkpoint is recorded as lost
    log = open(os.path.join(run, "submitit", f"{pre}_0_log.err")).read()
    assert re.search(r"another rank is gone|preempted|SIGTERM", log), log[-3000:]

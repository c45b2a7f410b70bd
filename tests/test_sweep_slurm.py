"""python -m hpc_bert.sweep on the suite's real SLURM: 3 tiny members in one job array, each with its own
budget and GLUE. Member 1 is preempted mid-run and requeued alone; member 2 fails (its shards are
truncated: the launcher cannot see that, the trainer refuses them at startup); members 1 and 3 end with
GLUE tables, member 2's GLUE array is cancelled, the leaderboard lists all three.
Timing assertions bound, never pin (SLURM's ~30 s signal jitter)."""
import csv
import json
import os
import shutil
import subprocess
import sys

import pytest

from hpc_bert.pretrain.clock import Ledger
from hpc_bert.pretrain.events import read_events
from pretrain_fixtures import REPO
from slurm_fixture import job_info, sbatch, wait_until
from test_submit_slurm import inputs, ledger_done, pretrain_flags, queued  # noqa: F401
from test_sweep_local import without

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def run(module, *args, timeout=300):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def chain(run_dir) -> dict:
    return json.load(open(os.path.join(run_dir, "chain.json")))


def test_sweep_preempted_task_requeued_alone_failed_member_glue_cancelled(slurm_cluster, inputs,  # noqa: F811
                                                                         tmp_path):
    bad = tmp_path / "bad_shards"
    shutil.copytree(inputs["shards"], bad)
    victim = bad / "train_shard_0.hdf5"
    victim.write_bytes(victim.read_bytes()[:300])
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"base: configs/pretrain/tiny.yaml\nmembers:\n  - {{lr: 3.0e-3}}\n"
                    f"  - {{lr: 2.0e-3, dataset_path: {bad}}}\n  - {{lr: 1.0e-3}}\n")
    glue = tmp_path / "glue.yaml"
    glue.write_text(open(inputs["grid"]).read().replace("seeds: [1, 2]", "seeds: [1]"))
    sweep_dir = tmp_path / "sweep"
    # each member's pretraining task gets a node of its own (so preempting one touches no other);
    # GLUE, aggregation and leaderboard share nodes
    r = run("hpc_bert.sweep", "--cluster", "slurm", "--budget", "0.025", "--allocation_hours", "0.1",
            "--grid", str(grid), "--sweep_dir", str(sweep_dir), "--glue", str(glue), "--partition", "debug",
            "--cpus_per_task", "1", "--slurm_additional", "exclusive", "--glue_slurm_additional", "exclusive=",
            "--finetune_time_markers", "0.5", *without(pretrain_flags(inputs), "lr", "config"))
    assert r.returncode == 0, r.stdout + r.stderr
    record = json.load(open(sweep_dir / "sweep.json"))
    members = [m["run_dir"] for m in record["members"]]
    one, two, three = members
    array = record["submissions"][-1]["array"]
    assert [chain(m)["jobs"]["pretrain"] for m in members] == [f"{array}_{i}" for i in range(3)]
    all_ids = {array, record["submissions"][-1]["leaderboard"]} | {
        j for m in members for role, j in chain(m)["jobs"].items() if role != "pretrain"}
    live = run("hpc_bert.status", str(sweep_dir))
    assert live.returncode == 0 and "queue:" in live.stdout and f"pretrain {array}_" in live.stdout, live.stdout

    # member 1 trains: preempt it (a job in the high-priority partition wants its node)
    wait_until(lambda: any(e["event"] == "train" for e in read_events(one)), 240, "member 1 to train", interval=1)
    wait_until(lambda: (job_info(slurm_cluster, f"{array}_2") or {}).get("JobState") == "RUNNING", 120,
               "member 3 to run (on the node member 2 left)", interval=1)
    node = job_info(slurm_cluster, f"{array}_0")["NodeList"]
    before_three = job_info(slurm_cluster, f"{array}_2")
    urgent = sbatch(slurm_cluster, "sleep 45\n", "-p", "urgent", "-w", node, "--exclusive", cwd=tmp_path, name="urgent")
    wait_until(lambda: (job_info(slurm_cluster, f"{array}_0") or {}).get("Restarts", "0") != "0"
               or (job_info(slurm_cluster, f"{array}_0") or {}).get("JobState") in ("PENDING", "REQUEUED"),
               120, "member 1's task to be requeued", interval=1)
    # requeued alone: member 3's task keeps its job id, state and restart count
    three_now = job_info(slurm_cluster, f"{array}_2")
    assert three_now["JobId"] == before_three["JobId"] and three_now["JobState"] in ("RUNNING", "COMPLETING")
    assert three_now.get("Restarts", "0") == "0" and three_now["NodeList"] != node

    led3 = wait_until(lambda: ledger_done(three), 400, "member 3's budget", interval=2)
    led1 = wait_until(lambda: ledger_done(one), 600, "member 1's budget after preemption", interval=2)
    assert [a.end_reason for a in led1.allocations][0] == "preempted", [a.end_reason for a in led1.allocations]
    assert led1.allocations[-1].end_reason == "budget_done" and led1.allocations[1].elapsed_begin_s > 0
    assert len(led3.allocations) == 1 and led3.allocations[0].restart_count == 0  # never requeued
    # member 2 failed at startup, and its GLUE array was cancelled (never ran)
    assert "train_shard_0.hdf5" in json.load(open(os.path.join(two, "sweep_failed.json")))["why"]
    two_glue = chain(two)["jobs"]["glue_array"]
    wait_until(lambda: not queued(slurm_cluster, {two_glue}), 120, "member 2's GLUE array to leave the queue")
    info = job_info(slurm_cluster, two_glue)
    assert info is None or info["JobState"] == "CANCELLED", info
    assert not os.path.exists(os.path.join(two, "glue"))

    results = wait_until(lambda: (sweep_dir / "sweep_results.csv").exists() and sweep_dir / "sweep_results.csv",
                         600, "the leaderboard", interval=2)
    for m in (one, three):
        assert os.path.exists(os.path.join(m, "glue_results.md"))
    # member 3's GLUE started while member 1 still trained
    logs = os.path.join(three, "submitit")
    glue3 = chain(three)["jobs"]["glue_array"]
    first_glue3 = min(os.stat(os.path.join(logs, f)).st_ctime for f in os.listdir(logs) if f.startswith(glue3 + "_"))
    assert first_glue3 < led1.allocations[-1].end_wall
    rows = {r["member"]: r for r in csv.DictReader(open(results))}
    names = [m["name"] for m in record["members"]]
    assert [rows[n]["state"] for n in names] == ["done", "failed", "done"]
    assert rows[names[0]]["GLUE final"] and rows[names[2]]["GLUE final"] and not rows[names[1]]["GLUE final"]
    assert int(rows[names[0]]["allocations"]) >= 2 and rows[names[2]]["allocations"] == "1"
    assert sum(r["best"] == "yes" for r in rows.values()) == 1
    failed_line = next(x for x in open(sweep_dir / "sweep_results.md") if x.startswith(f"- {names[1]}:"))
    assert "train_shard_0.hdf5" in failed_line  # the member's own error, from its task's log
    wait_until(lambda: not queued(slurm_cluster, all_ids), 120, "the sweep to leave the queue")
    # resubmitting continues: nothing is done twice, the failed member only with --retry_failed
    again = run("hpc_bert.sweep", "--cluster", "slurm", "--budget", "0.025", "--allocation_hours", "0.1",
                "--grid", str(grid), "--sweep_dir", str(sweep_dir), "--glue", str(glue), "--partition", "debug",
                "--cpus_per_task", "1", "--finetune_time_markers", "0.5", "--dry_run",
                *without(pretrain_flags(inputs), "lr", "config"))
    assert again.returncode == 0, again.stderr
    assert f"not rerun: {names[0]} (done), {names[1]} (failed), {names[2]} (done); pass --retry_failed" in again.stdout
    retry = run("hpc_bert.sweep", "--cluster", "slurm", "--budget", "0.025", "--allocation_hours", "0.1",
                "--grid", str(grid), "--sweep_dir", str(sweep_dir), "--glue", str(glue), "--partition", "debug",
                "--cpus_per_task", "1", "--finetune_time_markers", "0.5", "--dry_run", "--retry_failed",
                *without(pretrain_flags(inputs), "lr", "config"))
    assert retry.returncode == 0 and f"not rerun: {names[0]} (done), {names[2]} (done)\n" in retry.stdout
    assert "#### pretraining array: 1 member, task i" in retry.stdout  # only the failed member would run again
    assert len(Ledger.load(one).allocations) == len(led1.allocations)  # a dry run changed nothing


def test_sweep_cancel_saves_every_member_then_the_same_command_continues(slurm_cluster, inputs,  # noqa: F811
                                                                        tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("base: configs/pretrain/tiny.yaml\naxes:\n  lr: [3.0e-3, 1.0e-3]\n")
    sweep_dir = tmp_path / "sweep"
    args = ["--cluster", "slurm", "--budget", "0.02", "--allocation_hours", "0.1", "--grid", str(grid),
            "--sweep_dir", str(sweep_dir), "--partition", "debug", "--cpus_per_task", "1",
            *without(pretrain_flags(inputs), "lr", "config")]
    r = run("hpc_bert.sweep", *args)
    assert r.returncode == 0, r.stdout + r.stderr
    record = json.load(open(sweep_dir / "sweep.json"))
    members = [m["run_dir"] for m in record["members"]]
    ids = {record["submissions"][-1]["array"], record["submissions"][-1]["leaderboard"]}
    for m in members:
        wait_until(lambda: sum(e["event"] == "train" for e in read_events(m)) >= 2, 240, f"{m} to train", interval=1)
    c = run("hpc_bert.sweep", "--cancel", str(sweep_dir), timeout=900)
    assert c.returncode == 0, c.stdout + c.stderr
    assert c.stdout.count("sent USR2") == 2 and "cancelled the leaderboard job" in c.stdout
    wait_until(lambda: not queued(slurm_cluster, ids), 120, "the cancelled sweep to leave the queue")
    for m in members:
        led = Ledger.load(m)
        # each member saved on the stop signal, and its ledger says the user cancelled it
        assert len(led.allocations) == 1 and led.current.end_reason == "cancelled" and not led.totals()["done"]
    assert not (sweep_dir / "sweep_results.md").exists()  # the leaderboard job was cancelled first
    status = run("hpc_bert.status", str(sweep_dir))
    assert status.stdout.count("| cancelled |") == 2, status.stdout
    r = run("hpc_bert.sweep", *args)  # the same command continues both budgets
    assert r.returncode == 0, r.stdout + r.stderr
    wait_until(lambda: (sweep_dir / "sweep_results.csv").exists(), 600, "the leaderboard", interval=2)
    for m in members:
        led = Ledger.load(m)
        assert [a.end_reason for a in led.allocations] == ["cancelled", "budget_done"]
        assert led.allocations[1].elapsed_begin_s > 0  # resumed the cancel's checkpoint
    rows = list(csv.DictReader(open(sweep_dir / "sweep_results.csv")))
    assert [r["state"] for r in rows] == ["done", "done"] and all(r["allocations"] == "2" for r in rows)

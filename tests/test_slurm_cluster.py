"""The SLURM behaviours hpc_bert relies on, checked against a real SLURM.

The cluster comes from the `slurm_cluster` fixture (tests/slurm_fixture.py): an external
one when sinfo answers, else the private two-node cluster of tests/slurm_local.py. SLURM
timing jitters (slurmctld checks time limits on a ~30 s cycle), so nothing here asserts
exact timing; every wait has a generous bound.
"""
from __future__ import annotations

import time

import pytest

from slurm_fixture import (read_lines, sbatch, scancel, slurm_cluster,  # noqa: F401
                           wait_state, wait_until)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
            "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


def _private(cluster) -> bool:
    return not cluster.external


@pytest.mark.timeout(90)
def test_trivial_job_runs_and_writes_file(slurm_cluster, tmp_path):
    out = tmp_path / "hello.txt"
    t_submit = time.time()
    jid = sbatch(slurm_cluster, f'date +%s.%N > {out}.tmp; echo "$SLURM_JOB_ID" >> {out}.tmp;'
                                f' mv {out}.tmp {out}\n', cwd=tmp_path)
    lines = wait_until(lambda: read_lines(out), 60, f"job {jid} to write {out}")
    assert lines[1] == str(jid)
    latency = float(lines[0]) - t_submit
    print(f"submit -> batch script running: {latency:.2f} s")
    assert latency < 30
    info = wait_state(slurm_cluster, jid, FINISHED, 60)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", info


@pytest.mark.timeout(150)
def test_scontrol_requeue_reruns_with_restart_count(slurm_cluster, tmp_path):
    log = tmp_path / "restarts.txt"
    jid = sbatch(slurm_cluster, f"""
echo "${{SLURM_RESTART_COUNT:-0}}" >> {log}
if [ "${{SLURM_RESTART_COUNT:-0}}" = 0 ]; then sleep 300; fi
""", "--requeue", cwd=tmp_path)
    try:
        wait_until(lambda: read_lines(log) == ["0"], 60, "first run")
        r = slurm_cluster.run("scontrol", "requeue", str(jid), check=False)
        assert r.returncode == 0, r.stderr
        # cred_expire=10: the requeued job may start again only ~10 s later
        wait_until(lambda: read_lines(log) == ["0", "1"], 90, "second run with restart 1")
        info = wait_state(slurm_cluster, jid, FINISHED, 60)
        assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", info
    finally:
        scancel(slurm_cluster, jid)


@pytest.mark.timeout(150)
def test_preemption_by_higher_tier_partition_requeues(slurm_cluster, tmp_path):
    if "urgent" not in slurm_cluster.partitions or "debug" not in slurm_cluster.partitions:
        pytest.skip("needs partitions debug and urgent (PriorityTier 1/2, "
                    "PreemptMode=REQUEUE) as in tests/slurm_local.py")
    log = tmp_path / "low.txt"
    urgent_out = tmp_path / "urgent.txt"
    # the low job takes every CPU of both nodes, so the urgent job must preempt it
    low = sbatch(slurm_cluster, f"""
trap 'echo "term $SLURM_RESTART_COUNT" >> {log}.signals' TERM
echo "${{SLURM_RESTART_COUNT:-0}}" >> {log}
if [ "${{SLURM_RESTART_COUNT:-0}}" = 0 ]; then sleep 300; fi
""", "-p", "debug", "--requeue", "--exclusive", "-N2", cwd=tmp_path, name="low")
    urgent = None
    try:
        wait_until(lambda: read_lines(log) == ["0"], 60, "low-priority job running")
        urgent = sbatch(slurm_cluster, f"hostname > {urgent_out}; sleep 3\n",
                        "-p", "urgent", "-N1", "-n1", cwd=tmp_path, name="urgent")
        wait_until(lambda: urgent_out.exists(), 60, "urgent job to run (preempting)")
        wait_until(lambda: read_lines(log) == ["0", "1"], 90, "low job to run again")
        # preemption sent SIGTERM to the batch shell of the first run (hpc_bert saves on it)
        assert read_lines(f"{log}.signals")[:1] == ["term"]
        info = wait_state(slurm_cluster, low, FINISHED, 60)
        assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", info
        assert wait_state(slurm_cluster, urgent, FINISHED, 60)["JobState"] == "COMPLETED"
    finally:
        scancel(slurm_cluster, low, *([urgent] if urgent else []))


@pytest.mark.timeout(90)
def test_two_node_srun_ranks(slurm_cluster, tmp_path):
    if len(slurm_cluster.nodes) < 2:
        pytest.skip("needs 2 nodes")
    out = tmp_path / "ranks.out"
    jid = sbatch(slurm_cluster, 'srun bash -c \'echo "$SLURM_PROCID $SLURMD_NODENAME '
                                '$SLURM_NTASKS"\'\n',
                 "-N2", "--ntasks-per-node=1", "-o", str(out), cwd=tmp_path)
    info = wait_state(slurm_cluster, jid, FINISHED, 60)
    assert info["JobState"] == "COMPLETED", (info, out.read_text() if out.exists() else "")
    rows = sorted(line.split() for line in out.read_text().splitlines() if line.strip())
    assert [r[0] for r in rows] == ["0", "1"] and all(r[2] == "2" for r in rows), rows
    if _private(slurm_cluster):
        assert rows == [["0", "n1", "2"], ["1", "n2", "2"]]
    else:
        assert rows[0][1] != rows[1][1]


@pytest.mark.timeout(200)
def test_time_limit_signal_reaches_batch_shell_then_kill(slurm_cluster, tmp_path):
    """--time=1 --signal=B:USR2@50: USR2 in the batch shell, then killed (TIMEOUT)
    within ~100 s of the start; the exact moments jitter by up to ~30 s."""
    mark = tmp_path / "usr2"
    started = tmp_path / "started"
    jid = sbatch(slurm_cluster, f"""
trap 'date +%s.%N >> {mark}' USR2
date +%s.%N > {started}
for i in $(seq 1 600); do sleep 1; done
""", "--time=1", "--signal=B:USR2@50", cwd=tmp_path)
    try:
        t0 = float(wait_until(lambda: read_lines(started), 60, "job start")[0])
        info = wait_state(slurm_cluster, jid, FINISHED, 150)
        t_end = time.time()
        assert info["JobState"] == "TIMEOUT", info
        sig = read_lines(mark)
        assert sig, "USR2 never reached the batch shell"
        t_sig = float(sig[0]) - t0
        print(f"USR2 {t_sig:.1f} s after start, job seen TIMEOUT {t_end - t0:.1f} s after")
        assert 0 <= t_sig < t_end - t0
        assert t_end - t0 < 120, "a 1-minute time limit should end the job within ~100 s"
    finally:
        scancel(slurm_cluster, jid)


@pytest.mark.timeout(90)
def test_afterok_dependency_cancelled_when_parent_fails(slurm_cluster, tmp_path):
    ran = tmp_path / "child_ran"
    parent = sbatch(slurm_cluster, "sleep 2; exit 3\n", cwd=tmp_path, name="parent")
    child = sbatch(slurm_cluster, f"touch {ran}\n", f"--dependency=afterok:{parent}",
                   "--kill-on-invalid-dep=yes", cwd=tmp_path, name="child")
    try:
        info = wait_state(slurm_cluster, parent, FINISHED, 60)
        assert info["JobState"] == "FAILED" and info["ExitCode"] == "3:0", info
        info = wait_state(slurm_cluster, child, FINISHED, 60)
        assert info["JobState"] == "CANCELLED", info
        assert not ran.exists()
    finally:
        scancel(slurm_cluster, parent, child)

"""Faults a cluster throws that no signal announces: a rank that hangs, a disk that fills.

A real tiny BERT trained with DeepSpeed on CPU (gloo), ranks started as srun starts them (one
process each). A hung rank (SIGSTOP) ends the allocation within the hang timeout with every
running rank's stacks in the run dir and the requeue status; a disk that fills during a save
ends it with one line, the previous checkpoint loadable; the next allocation resumes both times.
"""
import os
import socket
import subprocess
import sys
import time

import pytest

from hpc_bert.pretrain.checkpoint import checkpoints_dir, find_latest, safe_load
from hpc_bert.pretrain.clock import Ledger
from hpc_bert.pretrain.events import read_events
from pretrain_fixtures import REPO, simulated_flags, small_disk, train

pytestmark = pytest.mark.slow

STEP_S = 10.0
STEPS = 30
HANG_TIMEOUT_S = 15


def flags(run_dir, inputs, **over):
    return simulated_flags(run_dir, inputs, STEPS * STEP_S / 3600, STEP_S,
                           **{"checkpoint_every_minutes": 3 * STEP_S / 60, "finetune_time_markers": "",
                              "do_validation": "false", **over})


def start_ranks(flags_: list[str], procs: int, log_dir, env_extra: dict | None = None) -> list[subprocess.Popen]:
    with socket.socket() as s:  # a free port for this allocation's process group
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", WORLD_SIZE=str(procs),
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), **(env_extra or {}))
    return [subprocess.Popen([sys.executable, "-m", "hpc_bert.train", *flags_], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=open(os.path.join(str(log_dir), f"rank{r}-{port}.err"), "w"),
                             env=dict(env, RANK=str(r), LOCAL_RANK=str(r))) for r in range(procs)]


def test_a_stopped_rank_ends_the_allocation_with_stacks_and_the_requeue_status(tmp_path, inputs):
    run = tmp_path / "run"
    f = flags(run, inputs, hang_timeout_s=HANG_TIMEOUT_S)
    # rank 1 freezes (SIGSTOP) right after step 10: rank 0 waits for it in the step's all-reduce
    ranks = start_ranks(f, 2, tmp_path, {"HPC_BERT_FAULTS": "stop@step:10", "HPC_BERT_FAULTS_RANK": "1"})
    try:
        deadline = time.monotonic() + 600
        while not os.path.exists(os.path.join(run, "hang_stacks")) and time.monotonic() < deadline:
            time.sleep(0.5)  # the watchdog is armed at the first step boundary
        t_armed = time.monotonic()
        rc0 = ranks[0].wait(timeout=600)
        took = time.monotonic() - t_armed
    finally:
        for p in ranks:  # the frozen rank is what the scheduler kills when the allocation ends
            if p.poll() is None:
                p.kill()
                p.wait()
    err = open(next(tmp_path.glob("rank0-*.err"))).read()
    assert rc0 == 75, err[-3000:]
    assert took <= HANG_TIMEOUT_S + 60, took
    last = err.strip().splitlines()[-1]
    assert "no optimizer step completed for 15 s after step 10" in last and "hang_stacks" in last, last
    stacks = open(os.path.join(run, "hang_stacks", [n for n in os.listdir(run / "hang_stacks") if n.startswith("rank_0.")][0])).read()
    assert "Thread" in stacks and "agree_step" in stacks, stacks  # all threads; the main one waits in the all-reduce
    led = Ledger.load(str(run))
    assert led.current.end_reason == "hang" and led.current.step_last == 10
    saved = find_latest(str(run))["step"]
    assert saved == 9
    # the next allocation resumes from the newest checkpoint and finishes; the ledger says what was lost
    nxt = start_ranks(f, 2, tmp_path)
    codes = [p.wait(timeout=600) for p in nxt]
    assert codes == [0, 0], open(sorted(tmp_path.glob("rank0-*.err"))[-1]).read()[-3000:]
    led = Ledger.load(str(run))
    first, second = led.allocations
    assert first.end_reason == "hang" and second.end_reason == "budget_done"
    assert second.step_begin == saved and first.lost_s == pytest.approx((10 - saved) * STEP_S)
    assert any(e["event"] == "allocation_end" and e["reason"] == "hang" for e in read_events(str(run)))


def checkpoint_size(run_dir) -> int:
    tag = find_latest(str(run_dir))["tag"]
    folder = os.path.join(checkpoints_dir(str(run_dir)), tag)
    return sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder))


def test_a_disk_that_fills_during_a_save_loses_nothing(tmp_path, inputs):
    probe = tmp_path / "probe"
    r = train(flags(probe, inputs, total_training_time=3 * STEP_S / 3600))
    assert r.returncode == 0, r.stderr[-3000:]
    size = checkpoint_size(probe)
    # room for one checkpoint, the ledger and the metrics, not for the second checkpoint beside it
    with small_disk(tmp_path / "disk", int(1.5 * size) + 64 * 1024) as disk:
        run = disk / "run"
        f = flags(run, inputs)
        r = train(f)
        assert r.returncode == 75, r.stderr[-3000:]
        last = r.stderr.strip().splitlines()[-1]
        assert "No space left on device" in last and str(run) in last and "bytes free" in last, last
        assert "needs" in last and "resubmit" in last and "Traceback" not in r.stderr, r.stderr[-3000:]
        root = checkpoints_dir(str(run))
        assert not [n for n in os.listdir(root) if n.endswith(".partial")]
        meta = find_latest(str(run))
        assert meta["step"] == 3
        for name in os.listdir(os.path.join(root, meta["tag"])):  # the previous checkpoint loads, whole
            if name.endswith(".pt"):
                safe_load(os.path.join(root, meta["tag"], name), deepspeed_types=True)
        led = Ledger.load(str(run))
        assert led.current.end_reason == "disk_full"
        # more room: the next allocation resumes from that checkpoint and finishes
        subprocess.run(["mount", "-o", f"remount,size={20 * size}", str(disk)], check=True)
        r = train(f)
        assert r.returncode == 0, r.stderr[-3000:]
        led = Ledger.load(str(run))
        assert [a.end_reason for a in led.allocations] == ["disk_full", "budget_done"]
        assert led.allocations[1].step_begin == 3 and led.totals()["elapsed_s"] == STEPS * STEP_S


def test_kill_during_a_background_save_loses_at_most_the_interval_and_one_step(tmp_path, inputs):
    run = tmp_path / "run"
    f = flags(run, inputs)  # a periodic (background) save every 3 steps
    # kill -9 once the writer thread has written step 6's files, before it publishes them
    r = train(f, {"HPC_BERT_FAULTS": "kill@save:6"})
    assert r.returncode == -9, r.stderr[-3000:]
    assert find_latest(str(run))["step"] == 3  # the save in flight never became a checkpoint
    r = train(f)
    assert r.returncode == 0, r.stderr[-3000:]
    killed, resumed = Ledger.load(str(run)).allocations
    assert killed.end_reason == "crash" and resumed.step_begin == 3
    assert 0 < killed.lost_s <= 3 * STEP_S + STEP_S, killed.lost_s
    blocked = [e["blocked_seconds"] for e in read_events(str(run)) if e["event"] == "checkpoint"
               and e["reason"] == "periodic"]
    assert blocked and all(b >= 0 for b in blocked)

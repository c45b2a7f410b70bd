"""Budget clock, atomic ledger, run-dir lock."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from hpc_bert.pretrain.clock import BudgetClock, Ledger
from hpc_bert.errors import UserError
from hpc_bert.runlock import RunLock, live_owner


class FakeTime:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_wall_clock_counts_from_first_step_on_top_of_resumed_elapsed():
    now = FakeTime()
    c = BudgetClock(budget_s=100, resumed_elapsed_s=30, now=now)
    now.t += 50  # startup does not count
    assert c.elapsed() == 30
    c.start()
    now.t += 20
    assert c.elapsed() == 50 and c.progress() == 0.5


def test_simulated_clock_advances_per_step_only():
    now = FakeTime()
    c = BudgetClock(budget_s=10, resumed_elapsed_s=2, simulated_step_seconds=0.5, now=now)
    c.start()
    now.t += 1000
    for _ in range(4):
        c.on_optimizer_step()
    assert c.elapsed() == 4.0 and c.progress() == 0.4


def test_phases_split_wall_time():
    now = FakeTime()
    c = BudgetClock(budget_s=100, now=now)
    c.start()
    now.t += 5
    with c.phase("validation"):
        now.t += 3
    now.t += 1
    with c.phase("checkpoint"):
        now.t += 2
    assert c.phase_totals() == {"train": 6, "validation": 3, "checkpoint": 2}
    assert c.elapsed() == 11  # validation and checkpoint time count toward the budget


def test_ledger_records_allocations_and_lost_time(tmp_path):
    now = FakeTime()
    led = Ledger(str(tmp_path), budget_s=100)
    led.begin_allocation(resumed_elapsed_s=0, step=0, startup_s=4.0, job_id="7", restart_count=0)
    c = BudgetClock(100, now=now)
    c.start()
    now.t += 30
    led.heartbeat(c, step=10, saved=True)   # checkpoint at elapsed 30
    now.t += 12
    led.heartbeat(c, step=14)               # then the job dies (no end_allocation)
    again = Ledger.load(str(tmp_path))
    again.begin_allocation(resumed_elapsed_s=30, step=10, startup_s=3.0, job_id="7", restart_count=1)
    first, second = again.allocations
    assert first.end_reason == "crash" and first.lost_s == pytest.approx(12)
    assert second.elapsed_begin_s == 30 and second.restart_count == 1
    c2 = BudgetClock(100, resumed_elapsed_s=30, now=now)
    c2.start()
    now.t += 70
    again.end_allocation(c2, step=40, reason="budget_done")
    on_disk = json.loads((tmp_path / "budget.json").read_text())
    assert on_disk["totals"]["elapsed_s"] == pytest.approx(100)
    assert on_disk["totals"]["lost_s"] == pytest.approx(12)
    assert on_disk["totals"]["startup_s"] == pytest.approx(7)
    assert on_disk["totals"]["done"] and on_disk["totals"]["requeues"] == 1


@pytest.mark.parametrize("content", ['{"version": 1, "budget_s": 1', "[]", '{"version": 1}', "\x00\x00"])
def test_corrupt_ledger_fails_clearly_and_is_kept(tmp_path, content):
    p = tmp_path / "budget.json"
    p.write_text(content)
    with pytest.raises(UserError, match=r"ledger .*budget.json is corrupt or partial .*move .* aside"):
        Ledger.load(str(tmp_path))
    assert p.read_text() == content


def test_kill_between_write_and_rename_keeps_previous_ledger(tmp_path):
    led = Ledger(str(tmp_path), budget_s=50)
    led.begin_allocation(resumed_elapsed_s=0, step=0, startup_s=1.0, job_id="1", restart_count=0)
    before = (tmp_path / "budget.json").read_text()
    script = textwrap.dedent(f"""
        import os, signal
        from hpc_bert.pretrain.clock import Ledger
        led = Ledger.load({str(tmp_path)!r})
        led.begin_allocation(resumed_elapsed_s=0, step=0, startup_s=9.0, job_id="2", restart_count=1)
        os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)   # die right before the rename
        led.begin_allocation(resumed_elapsed_s=0, step=0, startup_s=9.0, job_id="3", restart_count=2)
    """)
    r = subprocess.run([sys.executable, "-c", script])
    assert r.returncode == -signal.SIGKILL
    led = Ledger.load(str(tmp_path))  # still readable: the job-2 version
    assert [a.job_id for a in led.allocations] == ["1", "2"]
    assert (tmp_path / "budget.json").read_text() != before
    assert any(n.endswith(".tmp") for n in os.listdir(tmp_path))  # the torn temp file is ignored


HOLD = "import sys, time; from hpc_bert.runlock import RunLock; RunLock(sys.argv[1]).acquire(); " \
       "print('held', flush=True); time.sleep(60)"


def test_lock_blocks_a_second_job_and_stale_lock_is_taken_over(tmp_path):
    run = str(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, run], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        owner = live_owner(run)
        assert owner and owner["pid"] == holder.pid
        r = subprocess.run([sys.executable, "-c", "import sys; from hpc_bert.runlock import RunLock; "
                            "RunLock(sys.argv[1]).acquire()", run], capture_output=True, text=True)
        assert r.returncode != 0 and "in use by" in r.stderr and f"pid {holder.pid}" in r.stderr
    finally:
        holder.kill()   # SIGKILL: the lock file stays behind, the kernel lock does not
        holder.wait()
    assert os.path.exists(os.path.join(run, ".hpc_bert.lock"))
    assert live_owner(run) is None
    lock = RunLock(run).acquire()
    try:
        assert lock.took_over and lock.took_over["pid"] == holder.pid
    finally:
        lock.release()
    assert RunLock(run).acquire().took_over is None  # a clean release leaves no owner

"""bench/chaos.py, short: 8 faults (kills mid-step / mid-save / mid-ledger-write, double signals,
signals in a validation and after a marker) into one tiny run, which must end bitwise equal to the
uninterrupted run with a consistent ledger and every marker written once."""
import os
import subprocess
import sys

import pytest

from hpc_bert.pretrain.clock import BudgetClock, Ledger
from hpc_bert.pretrain import faults
from pretrain_fixtures import REPO


def test_fault_specs_name_a_point_twice_for_signals_back_to_back():
    plan = faults._parse("term@step:5,term@step:5,kill@ledger:3,usr2@validation:2")
    assert plan == {("step", 5): [faults.SIGNALS["term"]] * 2, ("ledger", 3): [faults.SIGNALS["kill"]],
                    ("validation", 2): [faults.SIGNALS["usr2"]]}
    with pytest.raises(ValueError, match="unknown fault 'kill@loader:1'"):
        faults._parse("kill@loader:1")


def test_ledger_adds_up_when_a_kill_cut_the_heartbeat_after_a_save(tmp_path):
    now = [0.0]
    led = Ledger(str(tmp_path), budget_s=100)
    led.begin_allocation(resumed_elapsed_s=0, step=0, startup_s=1.0, job_id="a")
    clock = BudgetClock(100, now=lambda: now[0])
    clock.start()
    now[0] = 30.0
    led.heartbeat(clock, step=3)
    # the run saved a checkpoint at 50 s and was killed while writing the heartbeat that said so
    led = Ledger.load(str(tmp_path))
    led.begin_allocation(resumed_elapsed_s=50, step=5, startup_s=1.0, job_id="b")
    first = Ledger.load(str(tmp_path)).allocations[0]
    assert first.end_reason == "crash" and first.elapsed_last_s == 50 and first.lost_s == 0
    clock = BudgetClock(100, resumed_elapsed_s=50, now=lambda: now[0])
    clock.start()
    now[0] = 80.0
    led.end_allocation(clock, step=10, reason="budget_done")
    allocs = Ledger.load(str(tmp_path)).allocations
    assert sum(a.elapsed_last_s - a.elapsed_begin_s - a.lost_s for a in allocs) == 100


@pytest.mark.slow
def test_eight_faults_leave_the_run_exactly_as_the_uninterrupted_one(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(REPO, "bench", "chaos.py"), "--faults", "8", "--seed", "3",
                        "--work_dir", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=1500)
    out = r.stdout
    assert r.returncode == 0, out[-4000:] + r.stderr[-2000:]
    assert "faults injected: 8 " in out
    assert "corrupt checkpoints loaded: 0" in out
    assert "weights bitwise equal (same world size): True; per-step batch ids / LR / loss equal: True" in out
    assert "ledger totals consistent: True" in out and "markers exactly once: True" in out
    assert out.rstrip().endswith("chaos: PASS")

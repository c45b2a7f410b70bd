"""bench/chaos.py, short: 8 faults (kills mid-step / mid-save / mid-ledger-write, double signals,
signals in a validation and after a marker) into one tiny run, which must end bitwise equal to the
uninterrupted run with a consistent ledger and every marker written once."""
import os
import subprocess
import sys

import pytest

from pretrain_fixtures import REPO

pytestmark = pytest.mark.slow


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

"""A sweep of 2 tiny members on this machine (--cluster local), end to end: each member trains its own
budget and gets its GLUE table, the leaderboard ranks both, resubmitting reruns nothing."""
import csv
import os
import subprocess
import sys

import pytest

from hpc_bert.pretrain.clock import Ledger
from pretrain_fixtures import REPO
from test_submit_slurm import inputs, pretrain_flags  # noqa: F401

pytestmark = pytest.mark.slow


def without(flags: list[str], *names: str) -> list[str]:
    """The flags minus some (an axis of the grid, or the grid's base config, may not also go to every member)."""
    for name in names:
        i = flags.index(f"--{name}")
        flags = flags[:i] + flags[i + 2:]
    return flags


def run_sweep(args):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "hpc_bert.sweep", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900)


def test_local_sweep_of_two_members_end_to_end(inputs, tmp_path):  # noqa: F811
    grid = tmp_path / "grid.yaml"
    grid.write_text("base: configs/pretrain/tiny.yaml\naxes:\n  lr: [3.0e-3, 1.0e-3]\n")
    glue = tmp_path / "glue.yaml"  # one seed: 2 fine-tuning runs per member (marker_0.5, final)
    glue.write_text(open(inputs["grid"]).read().replace("seeds: [1, 2]", "seeds: [1]"))
    sweep_dir = tmp_path / "sweep"
    args = ["--cluster", "local", "--budget", "0.004", "--allocation_hours", "0.1", "--grid", str(grid),
            "--sweep_dir", str(sweep_dir), "--glue", str(glue), *without(pretrain_flags(inputs), "lr", "config")]
    r = run_sweep(args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for name in ("lr3e-3", "lr1e-3"):
        led = Ledger.load(str(sweep_dir / name))
        assert led.totals()["done"] and led.current.end_reason == "budget_done"
        assert 0.004 * 3600 <= led.totals()["elapsed_s"] <= 0.004 * 3600 + 2.0  # its own budget, not shared
        assert (sweep_dir / name / "glue_results.md").exists()
    rows = list(csv.DictReader(open(sweep_dir / "sweep_results.csv")))
    assert sorted(r["member"] for r in rows) == ["lr1e-3", "lr3e-3"]
    assert all(r["state"] == "done" and r["GLUE final"] and r["val_loss"] and int(r["steps"]) > 0 for r in rows)
    assert float(rows[0]["GLUE final"]) >= float(rows[1]["GLUE final"]) and rows[0]["best"] == "yes"
    assert int(rows[0]["tokens"]) == int(rows[0]["samples"]) * 32  # the shards' sequence length
    md = open(sweep_dir / "sweep_results.md").read()
    assert "(best)" in md and "lr3e-3" in md
    # the same command again: both members are done, nothing is rerun
    again = run_sweep(args)
    assert again.returncode == 0, again.stderr
    assert "not rerun: lr3e-3 (done), lr1e-3 (done)" in again.stdout
    assert len(Ledger.load(str(sweep_dir / "lr3e-3")).allocations) == 1
    status = subprocess.run([sys.executable, "-m", "hpc_bert.status", str(sweep_dir), "--plot",
                             str(tmp_path / "sweep.png")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    assert "lr1e-3" in status.stdout and "GLUE final" in status.stdout
    assert os.path.getsize(tmp_path / "sweep.png") > 1000

"""python -m hpc_bert.status on a run dir with a ledger, events and a GLUE table."""
import json
import subprocess
import sys

from hpc_bert.pretrain.clock import BudgetClock, Ledger

REPO = __file__.rsplit("/tests/", 1)[0]


def make_run(run):
    now = [0.0]
    led = Ledger(str(run), budget_s=100)
    led.begin_allocation(resumed_elapsed_s=0, step=0, startup_s=3.0, job_id="11", restart_count=0)
    c = BudgetClock(100, now=lambda: now[0])
    c.start()
    now[0] = 60
    led.end_allocation(c, step=30, reason="timeout")
    led.begin_allocation(resumed_elapsed_s=60, step=30, startup_s=2.5, job_id="11", restart_count=1)
    c2 = BudgetClock(100, resumed_elapsed_s=60, now=lambda: now[0])
    c2.start()
    now[0] = 100
    led.end_allocation(c2, step=50, reason="budget_done")
    events = [{"event": "allocation_start", "step": 0, "elapsed_s": 0, "progress": 0},
              *({"event": "train", "step": s, "elapsed_s": 2 * s, "progress": s / 50, "lr": 1e-3 * (1 - s / 50),
                 "loss": 5 - s / 20} for s in range(1, 51)),
              {"event": "allocation_start", "step": 30, "elapsed_s": 60, "progress": 0.6},
              {"event": "validation", "step": 25, "elapsed_s": 50, "progress": 0.5, "val_loss": 3.25},
              {"event": "marker", "step": 25, "elapsed_s": 50, "progress": 0.5, "marker": 0.5}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (run / "glue_results.md").write_text("| checkpoint | SST-2 |\n|---|---|\n| final | 81.0 |\n")


def test_status_table_and_plot(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    make_run(run)
    r = subprocess.run([sys.executable, "-m", "hpc_bert.status", str(run), "--plot", str(tmp_path / "p.png")],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "spent 0.028 h (100.0%); allocations 2, requeues 1; done" in out
    assert "timeout" in out and "budget_done" in out and "60->100" in out
    assert "step 25 (50.0%): loss 3.2500" in out and "fine-tune markers: 0.5 @ step 25" in out
    assert "| final | 81.0 |" in out
    assert (tmp_path / "p.png").stat().st_size > 5000


def test_status_missing_run_dir_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "hpc_bert.status", str(tmp_path / "nope")],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "does not exist" in r.stderr

"""A budget change on a real SLURM: a finished --curve wsd chain, extended with
``python -m hpc_bert.submit --run_dir R --budget H`` and nothing else."""
import json
import os
import subprocess
import sys
import time

import pytest

from hpc_bert.pretrain.clock import Ledger
from pretrain_fixtures import REPO
from slurm_fixture import wait_until
from test_submit_slurm import inputs, job_ids, ledger_done, pretrain_flags, submit  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def glue_results(run, checkpoint) -> list[str]:
    folder = os.path.join(run, "glue", checkpoint)
    return [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs if f == "results.json"]


def test_finished_wsd_chain_extended_by_budget_alone(slurm_cluster, inputs, tmp_path):  # noqa: F811
    run = str(tmp_path / "run")
    r = submit(["--budget", "0.01", "--allocation_hours", "0.1", "--run_dir", run, "--partition", "debug",
                "--cpus_per_task", "1", "--glue", inputs["grid"], "--finetune_checkpoint_at_end",
                *pretrain_flags(inputs, curve="wsd", decay_proportion=0.25)])
    assert r.returncode == 0, r.stderr
    first = job_ids(r.stdout)
    wait_until(lambda: os.path.exists(os.path.join(run, "glue_results.md")), 400, "the first GLUE table", interval=2)
    assert len(glue_results(run, "final")) == 2
    before = Ledger.load(run)
    assert before.totals()["done"] and before.decay_start_checkpoints

    # a non-wsd budget change and a budget below what was spent are refused here, in one line
    r = submit(["--run_dir", run, "--budget", "0.001"])
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "already spent" in r.stderr, r.stderr

    t_extend = time.time()
    r = submit(["--run_dir", run, "--budget", "0.02"])
    assert r.returncode == 0, r.stderr
    assert "(restart_decay): the pretraining job resumes step_" in r.stdout
    second = job_ids(r.stdout)
    assert set(second) == {"pretrain", "array", "aggregate"} and second["pretrain"] != first["pretrain"]
    table = os.path.join(run, "glue_results.md")
    wait_until(lambda: os.path.exists(table) and os.path.getmtime(table) > t_extend and
               len(glue_results(run, "final")) == 2, 500, "the GLUE table of the new budget", interval=2)
    led = Ledger.load(run)
    assert led.budget_s == pytest.approx(72.0) and led.totals()["done"]
    # the new pretraining job continued the ledger: same allocations first, then its own
    assert led.allocations[:len(before.allocations)][0].job_id == before.allocations[0].job_id
    assert led.allocations[-1].job_id == second["pretrain"] and led.current.end_reason == "budget_done"
    (change,) = led.budget_changes
    assert change["kind"] == "restart_decay" and change["from_tag"] == before.decay_start_checkpoints[0]["tag"]
    # the GLUE array ran on the new final checkpoint; the old budget's results keep their own name
    final = json.load(open(os.path.join(run, "finetune_checkpoints", "final", "hpc_bert_meta.json")))
    assert final["elapsed_s"] >= 72.0
    assert all(os.path.getmtime(p) > t_extend for p in glue_results(run, "final"))
    assert len(glue_results(run, "final_budget_0.01h")) == 2
    status = subprocess.run([sys.executable, "-m", "hpc_bert.status", run], cwd=REPO, capture_output=True, text=True)
    assert "budget changes:" in status.stdout and "0.01 h -> 0.02 h (restart_decay)" in status.stdout


def test_running_wsd_chain_extended_by_budget_alone(slurm_cluster, inputs, tmp_path):  # noqa: F811
    run = str(tmp_path / "run")
    r = submit(["--budget", "0.02", "--allocation_hours", "0.1", "--run_dir", run, "--partition", "debug",
                "--cpus_per_task", "1", *pretrain_flags(inputs, curve="wsd", print_steps=5)])
    assert r.returncode == 0, r.stderr
    first = job_ids(r.stdout)["pretrain"]

    def stable_for_a_while():
        led = Ledger.load(run) if os.path.exists(os.path.join(run, "budget.json")) else None
        return led if led and led.current.elapsed_last_s > 10 else None
    wait_until(stable_for_a_while, 300, "training to run 10 s", interval=1)
    r = submit(["--run_dir", run, "--budget", "0.03"], timeout=300)
    assert r.returncode == 0, r.stderr
    assert "is running: stopping it first" in r.stdout and "(new_schedule)" in r.stdout, r.stdout
    second = job_ids(r.stdout)["pretrain"]
    led = wait_until(lambda: ledger_done(run), 400, "the extended budget to be spent", interval=2)
    assert led.budget_s == pytest.approx(108.0)
    # the budget change stopped the first chain as submit --cancel does, and the ledger says so
    assert led.allocations[0].job_id == first and led.allocations[0].end_reason == "cancelled"
    assert led.allocations[-1].job_id == second and led.current.end_reason == "budget_done"
    assert led.current.elapsed_last_s >= 108.0
    (change,) = led.budget_changes
    assert change["kind"] == "new_schedule" and change["from_elapsed_s"] < 0.02 * 3600 * 0.8
    assert [c["budget_s"] for c in led.decay_start_checkpoints] == [pytest.approx(108.0)]

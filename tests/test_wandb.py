"""W&B offline: one run per run dir across allocations (requeues resume the same id)."""
import json

import pytest

pytest.importorskip("wandb")

from hpc_bert.layout import WANDB_RUN_FILE
from hpc_bert.pretrain.clock import Ledger
from hpc_bert.pretrain.wandb_run import to_metrics
from pretrain_fixtures import tiny_flags, train, vocab_and_shards
from wandb_offline import offline_runs

STEP_S = 10.0
STEPS = 18

# No key for this (unreachable) server and no WANDB_MODE: the run must decide on offline by itself.
NO_WANDB_ACCOUNT = {"WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_API_KEY": "", "WANDB_MODE": ""}


def test_metrics_rows_carry_step_and_budget_hours():
    row = to_metrics({"event": "train", "step": 7, "elapsed_s": 1800.0, "progress": 0.25, "wall": 1.0,
                      "loss": 2.5, "lr": 1e-3, "note": None})
    assert row == {"step": 7, "budget_hours": 0.5, "progress": 0.25, "loss": 2.5, "lr": 1e-3}
    row = to_metrics({"event": "allocation_end", "step": 9, "elapsed_s": 36.0, "progress": 0.5, "wall": 2.0,
                      "reason": "timeout", "restart_count": 1})
    assert row == {"step": 9, "budget_hours": 0.01, "progress": 0.5, "allocation_end/reason": "timeout",
                   "allocation_end/restart_count": 1}


@pytest.mark.slow
def test_three_allocations_two_signal_stops_one_offline_run(tmp_path):
    data, vocab = vocab_and_shards(tmp_path / "inputs", per_shard=40)
    run = tmp_path / "run"
    flags = tiny_flags(str(run), data, vocab, STEPS * STEP_S / 3600, clock="simulated",
                       simulated_step_seconds=STEP_S, print_steps=2, finetune_time_markers="0.5",
                       report_to="tensorboard,wandb", project_name="budget-bert-test", job_name="exp1")
    codes, logs = [], []
    for fault in ("usr2@step:5", "term@step:11", ""):
        r = train(flags, env_extra={**NO_WANDB_ACCOUNT, "HPC_BERT_FAULTS": fault}, timeout=300)
        codes.append(r.returncode)
        logs.append(r.stderr)
    assert codes == [75, 75, 0], logs[-1][-3000:]
    for err in logs:  # offline, said once per allocation in one line
        lines = [x for x in err.splitlines() if "W&B runs offline" in x]
        assert len(lines) == 1 and "no W&B API key" in lines[0], err[-2000:]
    record = json.load(open(run / WANDB_RUN_FILE))
    assert record["project"] == "budget-bert-test" and record["name"] == "exp1"
    runs = offline_runs(str(run))
    assert len(runs) == 3
    assert {r["id"] for r in runs} == {record["id"]}
    assert [r["preempting"] for r in runs] == [True, True, False]
    steps = [row["step"] for r in runs for row in r["history"]]
    assert steps == sorted(steps)
    train_steps = [row["step"] for r in runs for row in r["history"] if "loss" in row]
    assert train_steps == sorted(set(train_steps)) and train_steps[-1] == STEPS  # strictly increasing
    assert all("budget_hours" in row for r in runs for row in r["history"])
    starts = [row for r in runs for row in r["history"] if "allocation_start/restart_count" in row]
    ends = [row for r in runs for row in r["history"] if "allocation_end/reason" in row]
    assert [row["allocation_start/restart_count"] for row in starts] == [0, 1, 2]
    assert [row["allocation_end/reason"] for row in ends] == ["timeout", "preempted", "budget_done"]
    assert any("marker/marker" in row for r in runs for row in r["history"])
    led = Ledger.load(str(run))
    assert [a.end_reason for a in led.allocations] == ["timeout", "preempted", "budget_done"]


def test_report_to_rejects_unknown_target(tmp_path):
    from hpc_bert.config.pretrain import RuntimeConfig
    from hpc_bert.errors import ConfigError
    with pytest.raises(ConfigError, match="--report_to 'mlflow' is not valid"):
        RuntimeConfig(report_to=("tensorboard", "mlflow"))
    assert RuntimeConfig(report_to=("none",)).report_to == ()


def test_glue_table_lands_in_the_run_dirs_wandb_run(tmp_path, monkeypatch):
    from hpc_bert.pretrain.wandb_run import WandbRun, log_glue_table
    for key, value in NO_WANDB_ACCOUNT.items():
        monkeypatch.setenv(key, value)
    run = tmp_path / "run"
    run.mkdir()
    first = WandbRun(str(run), "budget-bert-test", "exp2", None)
    event = {"event": "marker", "step": 3, "elapsed_s": 36.0, "progress": 0.5, "marker": 0.5}
    first.log(event)
    (run / "metrics.jsonl").write_text(json.dumps(event) + "\n")
    first.finish()
    csv_path = run / "glue_results.csv"
    csv_path.write_text("checkpoint,SST-2,average\nfinal,81.5,81.5\n")
    assert log_glue_table(str(run), str(csv_path))
    runs = offline_runs(str(run))
    assert len(runs) == 2 and runs[0]["id"] == runs[1]["id"] == first.id
    (table,) = [row for row in runs[1]["history"] if row.get("glue/_type") == "table-file"]
    assert table["glue/nrows"] == 1 and table["glue/ncols"] == 3 and table["step"] == 3

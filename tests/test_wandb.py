"""W&B offline: one run per run dir across allocations (requeues resume the same id)."""
import json

import pytest

pytest.importorskip("wandb")

from hpc_bert.layout import WANDB_RUN_FILE
from hpc_bert.pretrain.wandb_run import to_metrics
from wandb_offline import offline_runs

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

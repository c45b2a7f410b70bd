"""Two GLUE rounds on the suite's real SLURM: pretraining, the first array (MNLI), then a second
array `afterok` on the MNLI array tasks that fine-tunes RTE and STS-B from the best MNLI model;
the table says so and the submission zip holds both rounds' predictions."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest

from glue_fixtures import glue_rows, write_glue_tsv
from pretrain_fixtures import REPO, vocab_and_shards
from slurm_fixture import wait_until




@pytest.mark.slurm
@pytest.mark.slow
def test_second_array_starts_from_the_best_mnli_run(slurm_cluster, tmp_path):
    shards, vocab = vocab_and_shards(tmp_path / "inputs", per_shard=64)
    data = write_glue_tsv(tmp_path / "glue_data", glue_rows(n_train=16, n_dev=8, n_test=6, n_ax=5))
    grid = tmp_path / "grid.yaml"
    grid.write_text("tasks: [MNLI, RTE, STS-B]\nlearning_rates: [1.0e-3]\nseeds: [1]\nbatch_sizes: [8]\n"
                    f"num_train_epochs: 1\ndata_dir: {data}\nstart_from: {{RTE: MNLI, STS-B: MNLI}}\n"
                    "finetune:\n  max_seq_length: 32\n  max_steps: 2\n  do_predict: true\n"
                    "  evaluation_strategy: \"no\"\n  disable_tqdm: true\n")
    run = tmp_path / "run"
    flags = dict(tokenizer_name=vocab, dataset_path=shards, hidden_size=32, num_hidden_layers=2,
                 num_attention_heads=2, intermediate_size=64, max_position_embeddings=64, lr=3e-3,
                 train_batch_size=16, train_micro_batch_size_per_gpu=8, warmup_proportion=0.1, print_steps=20,
                 checkpoint_every_minutes=0.5, tensorboard="false", progress_bar="false")
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "hpc_bert.submit", "--cluster", "slurm", "--budget", "0.005",
                        "--config", "configs/pretrain/tiny.yaml",
                        "--allocation_hours", "0.1", "--run_dir", str(run), "--partition", "debug",
                        "--cpus_per_task", "1", "--glue", str(grid), "--finetune_checkpoint_at_end",
                        *[x for k, v in flags.items() for x in (f"--{k}", str(v))]],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if "GLUE second round" in x)
    first = next(x for x in r.stdout.splitlines() if "GLUE array" in x).split("GLUE array")[1].split()[0]
    second = line.split("array")[1].split()[0]
    # runs: (marker_0.5, final) x (MNLI, RTE, STS-B): MNLI is index 0 and 3, the first array's tasks 0 and 1
    assert f"(4 tasks, afterok:{first}_0:{first}_1)" in line, line
    table = run / "glue_results.md"
    wait_until(table.exists, 900, "the GLUE table", interval=3)
    for ckpt in ("marker_0.5", "final"):
        mnli = run / "glue" / ckpt / "MNLI" / "lr1e-3_seed1"
        for task in ("RTE", "STS-B"):
            rec = json.loads((run / "glue" / ckpt / task / "lr1e-3_seed1" / "results.json").read_text())
            assert rec["start_from"] == {"task": "MNLI", "model": str(mnli),
                                         "checkpoint": str(run / "finetune_checkpoints" / ckpt)}
            assert rec["config"]["ignore_mismatched_sizes"] is True  # 2 and 1 labels from a 3-label head
    logs = os.listdir(run / "submitit")
    second_starts = [os.stat(run / "submitit" / f).st_ctime for f in logs
                     if f.startswith(second + "_") and f.endswith("_log.out")]
    first_done = max(os.path.getmtime(run / "glue" / c / "MNLI" / "lr1e-3_seed1" / "results.json")
                     for c in ("marker_0.5", "final"))
    assert len(second_starts) == 4 and min(second_starts) >= first_done - 1.0
    text = table.read_text()
    assert "STS-B from MNLI, RTE from MNLI" in text and "| final | RTE (from MNLI) |" in text
    r = subprocess.run([sys.executable, "-m", "hpc_bert.glue", "submission", str(run)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    with zipfile.ZipFile(run / "glue_submission_final.zip") as zf:
        assert sorted(zf.namelist()) == ["AX.tsv", "MNLI-m.tsv", "MNLI-mm.tsv", "RTE.tsv", "STS-B.tsv"]
    assert "missing from the submission" in r.stderr and "CoLA.tsv" in r.stderr


def test_dry_run_shows_the_second_array(tmp_path):
    """No cluster needed: the scripts submit would hand to sbatch for a start_from grid."""
    grid = tmp_path / "grid.yaml"
    grid.write_text("tasks: [MNLI, SST-2, RTE]\nlearning_rates: [1.0e-4]\nseeds: [1, 2]\nstart_from: {RTE: MNLI}\n")
    r = subprocess.run([sys.executable, "-m", "hpc_bert.submit", "--cluster", "slurm", "--dry_run", "--budget", "1",
                        "--config", "configs/pretrain/tiny.yaml", "--glue", str(grid), "--run_dir",
                        str(tmp_path / "run"), "--finetune_checkpoint_at_end", "--vocab_size", "128"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    parts = r.stdout.split("####")
    titles = [p.strip() for p in parts[1::2]]
    assert titles == ["pretraining", "GLUE array: 8 tasks", "GLUE second round: 4 tasks", "aggregation"], titles
    first, second = parts[4], parts[6]
    assert "--array=0-7%" in first and "afterok:<pretrain_job_id>" in first  # (marker_0.5, final) x 4
    assert "--array=0-3%" in second and "afterok:<first-round task ids it starts from>" in second

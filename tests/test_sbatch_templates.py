"""slurm/*.sbatch, the templates for hand-written use, on a real SLURM.

The templates ask for GPUs; this CPU cluster has none, so the test submits a copy with the
GPU request lines removed and everything else as shipped (overrides go on sbatch's command
line, as a user would pass them).
"""
import os
import subprocess
import sys

import pytest

from hpc_bert.pretrain.clock import Ledger
from pretrain_fixtures import REPO, vocab_and_shards
from slurm_fixture import wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def job_env(**extra) -> dict:
    """The templates call `python`: make it this interpreter, as an activated venv would."""
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
    return dict(os.environ, PATH=path, **extra)


def cpu_copy(template: str, dest) -> str:
    lines = open(os.path.join(REPO, "slurm", template)).read().splitlines()
    kept = [line for line in lines if not line.startswith(("#SBATCH --gpus", "#SBATCH --gres"))]
    dest.write_text("\n".join(kept) + "\n")
    return str(dest)


def test_pretrain_template_requeues_itself_then_glue_array_template(slurm_cluster, tmp_path):
    shards, vocab = vocab_and_shards(tmp_path / "inputs", per_shard=64)
    run = tmp_path / "run"
    script = cpu_copy("pretrain.sbatch", tmp_path / "pretrain.sbatch")
    env = job_env(BUDGET="0.012", CONFIG="configs/pretrain/tiny.yaml", RUN_DIR=str(run))
    flags = ["--tokenizer_name", vocab, "--dataset_path", shards, "--hidden_size", "32", "--num_hidden_layers", "1",
             "--num_attention_heads", "2", "--intermediate_size", "64", "--max_position_embeddings", "64",
             "--finetune_time_markers", "", "--finetune_checkpoint_at_end", "--progress_bar", "false",
             "--tensorboard", "false", "--print_steps", "20"]
    r = subprocess.run(["sbatch", "--parsable", "--ntasks-per-node=1", "--cpus-per-task=1", "--time=1",
                        "--signal=B:USR2@10", "-o", str(tmp_path / "pretrain-%j.out"), "--chdir", REPO,
                        script, *flags], env=env, capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip().split(";")[0]

    def done():
        try:
            led = Ledger.load(str(run))
        except Exception:
            return None
        return led if led and led.totals()["done"] else None

    led = wait_until(done, 400, "the template's job to spend the budget", interval=2)
    assert len(led.allocations) >= 2
    assert led.allocations[0].end_reason == "timeout" and led.allocations[-1].end_reason == "budget_done"
    assert [a.restart_count for a in led.allocations] == list(range(len(led.allocations)))
    assert all(a.job_id == job for a in led.allocations)  # the same job id, requeued
    log = open(tmp_path / f"pretrain-{job}.out").read()
    assert "requeueing job" in log

    # the GLUE array template on the final checkpoint: 2 array tasks, then the table
    glue = tmp_path / "glue" / "SST-2"
    glue.mkdir(parents=True)
    for split, n in (("train", 64), ("dev", 32)):
        rows = ["sentence\tlabel"] + [f"w{i % 30 + 10} w{i % 7 + 50} {'w1' if i % 2 else 'w2'}\t{i % 2}" for i in range(n)]
        (glue / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"tasks: [SST-2]\nlearning_rates: [1.0e-3]\nseeds: [1, 2]\nbatch_sizes: [16]\n"
                    f"num_train_epochs: 1\ndata_dir: {tmp_path / 'glue'}\n"
                    "finetune:\n  max_seq_length: 32\n  evaluation_strategy: \"no\"\n")
    arr = cpu_copy("glue_array.sbatch", tmp_path / "glue_array.sbatch")
    env = job_env(GLUE=str(grid), RUN_DIR=str(run), CHECKPOINTS="final")
    r = subprocess.run(["sbatch", "--parsable", "--array=0-1", "--cpus-per-task=1", "--time=5", "--chdir", REPO,
                        "-o", str(tmp_path / "glue-%A_%a.out"), arr], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    results = lambda: [d for d, _, fs in os.walk(run / "glue") if "results.json" in fs]
    wait_until(lambda: len(results()) == 2, 300, "both array tasks' results", interval=2)
    r = subprocess.run([sys.executable, "-m", "hpc_bert.glue", "aggregate", str(run)], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "| final |" in open(run / "glue_results.md").read()

"""Another world size on a real SLURM: one allocation on 2 nodes, the next on 1 node.

The first submission stops at an early-exit marker (a finished allocation, no requeue); the
second, on one node, resumes it to the end of the budget. Under the simulated clock the run
must see the same global batches, LR and markers as an uninterrupted local run on one rank
(the order does not depend on the world size), and end with its weights up to float
summation order.
"""
import os
import subprocess
import sys

import pytest

from hpc_bert.pretrain.clock import Ledger
from pretrain_fixtures import REPO, train, vocab_and_shards
from slurm_fixture import wait_until
from test_elastic import WEIGHT_ATOL, final_weights, trace

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

STEP_S = 10.0
STEPS = 24
HOURS = STEPS * STEP_S / 3600


def trainer_flags(shards, vocab, **over) -> list[str]:
    flags = dict(tokenizer_name=vocab, dataset_path=shards, hidden_size=32, num_hidden_layers=2,
                 num_attention_heads=2, intermediate_size=64, max_position_embeddings=64, lr=3e-3,
                 train_batch_size=16, train_micro_batch_size_per_gpu=4, warmup_proportion=0.1, print_steps=1,
                 clock="simulated", simulated_step_seconds=STEP_S, finetune_time_markers="0.3,0.6",
                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, seed=7,
                 finetune_checkpoint_at_end="false", checkpoint_every_minutes=1000, tensorboard="false",
                 progress_bar="false")
    flags.update(over)
    return [x for k, v in flags.items() for x in (f"--{k}", str(v))]


def submit(args):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "hpc_bert.submit", "--cluster", "slurm", "--config",
                        "configs/pretrain/tiny.yaml", *args], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def ended(run_dir, count):
    try:
        led = Ledger.load(run_dir)
    except Exception:  # noqa: BLE001 - mid-write by the job: poll again
        return None
    return led if led and len(led.allocations) == count and led.current.end_reason else None


def test_an_allocation_on_two_nodes_then_one_on_one_node(slurm_cluster, tmp_path):
    shards, vocab = vocab_and_shards(tmp_path / "inputs", per_shard=40)
    straight = tmp_path / "straight"
    r = train(["--config", "configs/pretrain/tiny.yaml", "--output_dir", str(straight),  # submit's default config
               "--total_training_time", str(HOURS), *trainer_flags(shards, vocab)])
    assert r.returncode == 0, r.stderr[-3000:]
    run = str(tmp_path / "run")
    common = ["--budget", str(HOURS), "--allocation_hours", "0.1", "--run_dir", run, "--partition", "debug",
              "--cpus_per_task", "1"]
    submit([*common, "--nodes", "2", *trainer_flags(shards, vocab, early_exit_time_marker=10 * STEP_S / 3600)])
    led = wait_until(lambda: ended(run, 1), 300, "the 2-node allocation to end", interval=2)
    assert led.current.end_reason == "early_exit" and led.current.world_size == 2
    assert len(set(led.current.hosts)) >= 1 and led.current.step_last == 10
    submit([*common, "--nodes", "1", *trainer_flags(shards, vocab)])
    led = wait_until(lambda: ended(run, 2), 300, "the 1-node allocation to end", interval=2)
    assert [a.world_size for a in led.allocations] == [2, 1]
    assert [a.end_reason for a in led.allocations] == ["early_exit", "budget_done"]
    a, b = trace(run), trace(straight)
    assert sorted(a["ids"]) == list(range(1, STEPS + 1))
    assert a["ids"] == b["ids"] and a["lr"] == b["lr"]
    assert a["validation"].keys() == b["validation"].keys() and a["validation"]
    assert {m: s for m, (s, _p) in a["marker"].items()} == {m: s for m, (s, _p) in b["marker"].items()}
    wa, wb = final_weights(run), final_weights(straight)
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) <= WEIGHT_ATOL
    status = subprocess.run([sys.executable, "-m", "hpc_bert.status", run], cwd=REPO, capture_output=True, text=True)
    assert status.returncode == 0 and "ranks" in status.stdout

"""python -m hpc_bert.submit on a real SLURM (the suite starts its own when sbatch is absent).

Timing assertions tolerate SLURM's ~30 s signal jitter: they bound, never pin.
"""
import os
import subprocess
import sys

import pytest

from hpc_bert.pretrain import schedule
from hpc_bert.pretrain.clock import Ledger
from hpc_bert.pretrain.events import read_events
from pretrain_fixtures import REPO, vocab_and_shards
from slurm_fixture import sbatch, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm_inputs")
    shards, vocab = vocab_and_shards(root, per_shard=64)
    sst = root / "glue" / "SST-2"
    sst.mkdir(parents=True)
    for split, count in (("train", 96), ("dev", 48)):
        rows = ["sentence\tlabel"]
        for i in range(count):
            label = i % 2
            words = [f"w{(i * 7 + k) % 40 + 10}" for k in range(6)] + ["w1" if label else "w2"]
            rows.append(" ".join(words) + f"\t{label}")
        (sst / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    grid = root / "grid.yaml"
    grid.write_text(f"tasks: [SST-2]\nlearning_rates: [1.0e-3]\nseeds: [1, 2]\nbatch_sizes: [16]\n"
                    f"num_train_epochs: 1\ndata_dir: {root / 'glue'}\n"
                    "finetune:\n  max_seq_length: 32\n  evaluation_strategy: \"no\"\n")
    return {"shards": shards, "vocab": vocab, "grid": str(grid), "root": root}


def pretrain_flags(inputs, **over):
    flags = dict(tokenizer_name=inputs["vocab"], dataset_path=inputs["shards"], hidden_size=32,
                 num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                 lr=3e-3, train_batch_size=16, train_micro_batch_size_per_gpu=8, warmup_proportion=0.1,
                 print_steps=20, checkpoint_every_minutes=0.5, tensorboard="false", progress_bar="false")
    flags.update(over)
    # the tiny CPU model: without --config SLURM gets the paper's BERT-large on GPUs
    return ["--config", "configs/pretrain/tiny.yaml"] + [x for k, v in flags.items() for x in (f"--{k}", str(v))]


def submit(args, timeout=120):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "hpc_bert.submit", "--cluster", "slurm", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)


def job_ids(stdout: str) -> dict:
    out = {}
    for line in stdout.splitlines():
        if "pretraining job" in line:
            out["pretrain"] = line.split("pretraining job")[1].split()[0]
        if "GLUE array" in line:
            out["array"] = line.split("GLUE array")[1].split()[0]
            out["aggregate"] = line.split("aggregation")[1].split()[0]
    return out


def ledger_done(run_dir):
    try:
        led = Ledger.load(run_dir)
    except Exception:
        return None
    return led if led and led.totals()["done"] else None


def last_line(log_path) -> str:
    """The job log's last line, after asserting that the log holds no traceback."""
    text = open(log_path).read()
    assert "Traceback" not in text, text[-3000:]
    return text.strip().splitlines()[-1]


def queued(cluster, ids) -> list[str]:
    out = cluster.run("squeue", "-h", "-o", "%i %T", check=False).stdout.split("\n")
    return [line for line in out if line.strip() and line.split()[0].split("_")[0] in ids]


def test_budget_over_three_allocations_then_glue_array_then_table(slurm_cluster, inputs, tmp_path):
    run = str(tmp_path / "run")
    budget_h = 0.03  # 108 s of training in 1-minute allocations
    r = submit(["--budget", str(budget_h), "--allocation_hours", str(1 / 60), "--run_dir", run,
                "--partition", "debug", "--cpus_per_task", "1", "--glue", inputs["grid"],
                "--finetune_checkpoint_at_end", *pretrain_flags(inputs)])
    assert r.returncode == 0, r.stderr
    ids = job_ids(r.stdout)
    assert set(ids) == {"pretrain", "array", "aggregate"}
    led = wait_until(lambda: ledger_done(run), 600, "the budget to be spent", interval=2)
    allocs = led.allocations
    assert len(allocs) >= 3, [a.end_reason for a in allocs]
    assert [a.end_reason for a in allocs[:-1]] == ["timeout"] * (len(allocs) - 1)
    assert allocs[-1].end_reason == "budget_done"
    assert [a.restart_count for a in allocs] == list(range(len(allocs)))
    # training time sums to the budget, within one step
    budget_s = budget_h * 3600
    trained = sum(a.elapsed_last_s - a.elapsed_begin_s for a in allocs) - sum(a.lost_s for a in allocs)
    assert budget_s <= led.totals()["elapsed_s"] <= budget_s + 2.0
    assert trained == pytest.approx(led.totals()["elapsed_s"], abs=0.5)
    # the LR trace is one continuous schedule across allocations: each logged LR is the
    # schedule's value at that budget time (to within the step it was set at), no jumps
    train = sorted((e for e in read_events(run) if e["event"] == "train"), key=lambda e: e["elapsed_s"])
    assert all(any(a.step_begin < e["step"] <= a.step_last for e in train) for a in allocs)  # every allocation
    steepest = 3e-3 / (0.1 * budget_s)  # warmup slope, LR per second of budget
    for e in train:
        assert abs(e["lr"] - schedule.learning_rate(3e-3, "time", "linear", 0.1, e["elapsed_s"], budget_s)) \
            <= steepest * 0.5
    for a, b in zip(train, train[1:]):
        assert abs(b["lr"] - a["lr"]) <= steepest * (b["elapsed_s"] - a["elapsed_s"] + 0.5)
    # GLUE started only after pretraining succeeded, the table only after the array
    table = os.path.join(run, "glue_results.md")
    wait_until(lambda: os.path.exists(table), 400, "the GLUE table", interval=2)
    results = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(run, "glue")) for f in fs
               if f == "results.json"]
    assert len(results) == 4  # (marker_0.5 of tiny.yaml, final) x 2 seeds
    glue_logs = [os.path.join(run, "submitit", f) for f in os.listdir(os.path.join(run, "submitit"))
                 if f.startswith(ids["array"] + "_") and f.endswith("_log.out")]
    agg_logs = [os.path.join(run, "submitit", f) for f in os.listdir(os.path.join(run, "submitit"))
                if f.startswith(ids["aggregate"] + "_") and f.endswith("_log.out")]
    assert glue_logs and agg_logs
    first_glue_start = min(os.stat(p).st_ctime for p in glue_logs)
    assert allocs[-1].end_wall <= first_glue_start + 1.0
    assert max(os.path.getmtime(p) for p in results) <= min(os.stat(p).st_ctime for p in agg_logs) + 1.0
    assert "SST-2" in open(table).read()
    status = subprocess.run([sys.executable, "-m", "hpc_bert.status", run, "--plot", str(tmp_path / "p.png")],
                            cwd=REPO, capture_output=True, text=True)
    assert status.returncode == 0 and "budget_done" in status.stdout and "GLUE" in status.stdout
    assert os.path.getsize(tmp_path / "p.png") > 1000


def test_preempted_job_requeues_and_resumes(slurm_cluster, inputs, tmp_path):
    run = str(tmp_path / "run")
    r = submit(["--budget", "0.015", "--allocation_hours", "0.1", "--run_dir", run, "--partition", "debug",
                "--cpus_per_task", "1", *pretrain_flags(inputs)])
    assert r.returncode == 0, r.stderr
    wait_until(lambda: any(e["event"] == "train" for e in read_events(run)), 180, "training to start", interval=1)
    sbatch(slurm_cluster, "sleep 5\n", "-p", "urgent", "-N2", "--exclusive", cwd=tmp_path, name="urgent")
    led = wait_until(lambda: ledger_done(run), 400, "the budget to be spent after preemption", interval=2)
    reasons = [a.end_reason for a in led.allocations]
    assert reasons[0] == "preempted" and reasons[-1] == "budget_done", reasons
    assert led.allocations[1].restart_count >= 1
    assert led.allocations[1].elapsed_begin_s > 0  # resumed, not restarted from scratch


def test_two_nodes_one_task_each_train_with_world_size_two(slurm_cluster, inputs, tmp_path):
    run = str(tmp_path / "run")
    r = submit(["--budget", "0.004", "--allocation_hours", "0.1", "--run_dir", run, "--partition", "debug",
                "--nodes", "2", "--cpus_per_task", "1", *pretrain_flags(inputs, train_micro_batch_size_per_gpu=4)])
    assert r.returncode == 0, r.stderr
    led = wait_until(lambda: ledger_done(run), 300, "the 2-node run to finish", interval=2)
    end = [e for e in read_events(run) if e["event"] == "allocation_end"][-1]
    assert end["world_size"] == 2
    assert end["param_checksum_min"] == end["param_checksum_max"]
    assert led.current.end_reason == "budget_done"


def test_failed_pretraining_leaves_no_glue_job_pending(slurm_cluster, inputs, tmp_path):
    import shutil
    shards = tmp_path / "shards"
    shutil.copytree(inputs["shards"], shards)
    victim = shards / "train_shard_0.hdf5"
    victim.write_bytes(victim.read_bytes()[:300])  # truncated: the trainer refuses it at startup
    run = str(tmp_path / "run")
    r = submit(["--budget", "0.01", "--allocation_hours", "0.1", "--run_dir", run, "--partition", "debug",
                "--cpus_per_task", "1", "--glue", inputs["grid"], "--finetune_checkpoint_at_end",
                *pretrain_flags(inputs, dataset_path=str(shards))])
    assert r.returncode == 0, r.stderr
    ids = set(job_ids(r.stdout).values())
    wait_until(lambda: not queued(slurm_cluster, ids), 240, "no job of the chain left in the queue", interval=2)
    assert not os.path.exists(os.path.join(run, "glue"))
    log = "".join(open(os.path.join(run, "submitit", f)).read() for f in os.listdir(os.path.join(run, "submitit"))
                  if f.endswith("_log.err"))
    assert "train_shard_0.hdf5" in log
    # the aggregation (afterany) ends with one line naming the failed upstream job and its log
    jobs = job_ids(r.stdout)
    agg_log = open(os.path.join(run, "submitit", f"{jobs['aggregate']}_0_log.err")).read()
    lines = [x for x in agg_log.splitlines() if x.startswith("hpc_bert: error:")]
    assert len(lines) == 1 and f"pretraining job {jobs['pretrain']} failed" in lines[0], agg_log[-2000:]
    assert f"{jobs['pretrain']}_0_log.err" in lines[0] and "train_shard_0.hdf5" in lines[0]
    assert "no results.json" not in agg_log
    # the pretraining job's log ends with the trainer's one line, no traceback after it
    end = last_line(os.path.join(run, "submitit", f"{jobs['pretrain']}_0_log.err"))
    assert end.startswith("hpc_bert: error: ") and "train_shard_0.hdf5" in end, end
    status = subprocess.run([sys.executable, "-m", "hpc_bert.status", run], cwd=REPO, capture_output=True,
                            text=True)
    assert status.returncode == 0, status.stderr
    failed = [x for x in status.stdout.splitlines() if "FAILED:" in x]
    assert len(failed) == 1 and f"pretraining job {jobs['pretrain']} failed before training started" in failed[0], \
        status.stdout
    assert "train_shard_0.hdf5" in failed[0]
    assert "has not started training" not in status.stdout  # failed, not waiting to start


def test_allocation_longer_than_partition_limit(slurm_cluster, inputs, tmp_path):
    r = submit(["--budget", "1", "--allocation_hours", "1", "--partition", "short", "--run_dir",
                str(tmp_path / "run"), *pretrain_flags(inputs)])
    assert r.returncode == 2
    assert "exceeds the partition's time limit" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "submitit").exists()


def test_site_option_the_controller_rejects_is_one_line(slurm_cluster, inputs, tmp_path):
    r = submit(["--budget", "0.01", "--allocation_hours", "0.1", "--partition", "debug", "--run_dir",
                str(tmp_path / "run"), "--slurm_additional", "constraint=a100", *pretrain_flags(inputs)])
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "sbatch rejects the pretraining job's options" in lines[0], r.stderr
    assert "Invalid feature" in lines[0]
    assert not (tmp_path / "run" / "submitit").exists()

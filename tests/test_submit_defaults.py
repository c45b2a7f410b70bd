"""What submit fills in: the headline command (no --config on SLURM = the paper's BERT-large on
GPUs) and --allocation_hours auto, on a machine where SLURM cannot tell (no sinfo on PATH)."""
import os

from hpc_bert.launch.slurm_limits import duration_hours, gres_gpus
from test_submit import normalized, submit

HEADLINE = ["--budget", "24", "--cluster", "slurm", "--dry_run", "--dataset_path", "D", "--tokenizer_name", "V",
            "--vocab_size", "30528"]


def without_slurm() -> dict:
    path = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep)
                           if not any(os.path.exists(os.path.join(d, t)) for t in ("sinfo", "sbatch", "srun")))
    return {**os.environ, "PATH": path}


def test_headline_command_requests_gpus_and_the_24_layer_model(tmp_path):
    r = submit([*HEADLINE, "--gpus_per_node", "8", "--run_dir", str(tmp_path / "run")], env=without_slurm())
    assert r.returncode == 0, r.stderr
    plan = r.stdout.splitlines()[0]
    assert "24-layer model from configs/pretrain/academic-bert-large.yaml, 8 GPUs per node" in plan
    script = normalized(r.stdout).split("####")[2]
    assert "#SBATCH --gpus-per-node=8" in script and "#SBATCH --ntasks-per-node=8" in script
    # SLURM cannot tell the partition's MaxTime here: 24 h, and the plan line says why
    assert "allocations of 24 h (auto: no time limit reported" in plan


def test_headline_command_without_gpu_count_where_slurm_cannot_tell_is_one_line(tmp_path):
    r = submit([*HEADLINE, "--run_dir", str(tmp_path / "run")], env=without_slurm())
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--gpus_per_node N" in lines[0] and "--config configs/pretrain/tiny.yaml" in lines[0]
    assert not (tmp_path / "run").exists()


def test_local_cluster_keeps_the_tiny_cpu_model(tmp_path):
    r = submit(["--budget", "1", "--cluster", "local", "--dry_run", "--vocab_size", "96",
                "--run_dir", str(tmp_path / "run")], env=without_slurm())
    assert r.returncode == 0, r.stderr
    assert "2-layer model from configs/pretrain/tiny.yaml, CPU only" in r.stdout
    assert "allocations of 24 h (auto: 24 h, a local job has no time limit)" in r.stdout


def test_bad_allocation_hours_is_one_line(tmp_path):
    r = submit(["--budget", "1", "--cluster", "local", "--dry_run", "--allocation_hours", "soon",
                "--run_dir", str(tmp_path / "run")])
    assert r.returncode == 2 and "--allocation_hours expects hours or auto" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_slurm_durations_and_gres():
    assert duration_hours("2:00") == 2 / 60 and duration_hours("04:00:00") == 4.0
    assert duration_hours("1-12:00:00") == 36.0 and duration_hours("90") == 1.5
    assert duration_hours("infinite") is None and duration_hours("UNLIMITED") is None
    assert gres_gpus("gpu:8") == 8 and gres_gpus("gpu:a100:4(S:0-1)") == 4
    assert gres_gpus("gpu:a100:4,gpu:v100:2") == 6 and gres_gpus("(null)") == 0

"""The launcher without a cluster: the scripts it would submit (golden file) and bad input."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(REPO, "tests", "golden", "submit_dry_run.txt")
DRY = ["--cluster", "slurm", "--dry_run", "--budget", "24", "--config", "configs/pretrain/academic-bert-large.yaml",
       "--glue", "configs/glue/paper.yaml", "--run_dir", "runs/golden", "--partition", "gpu",
       "--gpus_per_node", "8", "--allocation_hours", "4"]


def submit(args, **kw):
    return subprocess.run([sys.executable, "-m", "hpc_bert.submit", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, **kw)


def normalized(text: str) -> str:
    return text.replace(sys.executable, "{PYTHON}").replace(REPO, "{REPO}")


def test_dry_run_scripts_match_golden_file():
    r = submit(DRY)
    assert r.returncode == 0, r.stderr
    got = normalized(r.stdout)
    if os.environ.get("HPC_BERT_UPDATE_GOLDEN"):
        open(GOLDEN, "w").write(got)
    assert got == open(GOLDEN).read()
    assert not os.path.exists(os.path.join(REPO, "runs", "golden"))  # a dry run writes nothing


def test_dry_run_key_settings():
    out = submit(DRY).stdout
    pre, glue, agg = out.split("####")[2], out.split("####")[4], out.split("####")[6]
    assert "#SBATCH --requeue" in pre and "#SBATCH --signal=USR2@" in pre and "--ntasks-per-node=8" in pre
    assert "--array=0-539%16" in glue and "afterok:<pretrain_job_id>" in glue
    assert "--kill-on-invalid-dep=yes" in glue and "--gpus-per-node=1" in glue
    assert "afterany:<glue_array_id>" in agg
    assert "up to 10 requeues" in out  # 24 h in 4 h allocations + margin, not submitit's 3


@pytest.mark.parametrize("args, needle", [
    (["--budget", "0"], "--budget must be a positive number of hours"),
    (["--budget", "-2"], "--budget must be a positive number of hours"),
    (["--budget", "1", "--config", "configs/pretrain/nope.yaml"], "configs/pretrain/nope.yaml does not exist"),
    (["--budget", "1", "--lrr", "3"], "did you mean --lr"),
    (["--budget", "1", "--glue", "missing.yaml"], "missing.yaml"),
    (["--budget", "1", "--warmup_proportion", "2"], "--warmup_proportion must lie in [0, 1)"),
    (["--budget", "1", "--allocation_hours", "0.05"], "--cluster local runs at most 6"),
])
def test_bad_input_one_line_before_submitting(args, needle, tmp_path):
    r = submit([*args, "--cluster", "local", "--run_dir", str(tmp_path / "run"), "--dry_run"])
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert not (tmp_path / "run").exists()


def test_unknown_glue_task(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text("tasks: [SST-2, FOO]\nlearning_rates: [5e-5]\nseeds: [1]\n")
    r = submit(["--budget", "1", "--cluster", "local", "--glue", str(grid), "--dry_run",
                "--finetune_checkpoint_at_end", "--run_dir", str(tmp_path / "run")])
    assert r.returncode == 2 and "FOO" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_run_dir_owned_by_live_job(tmp_path):
    run = tmp_path / "run"
    hold = subprocess.Popen([sys.executable, "-c", "import sys, time; from hpc_bert.launch.runlock import RunLock; "
                             "RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)", str(run)],
                            stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert hold.stdout.readline().strip() == "held"
        r = submit(["--budget", "1", "--cluster", "local", "--run_dir", str(run)])
        assert r.returncode == 2 and f"pid {hold.pid}" in r.stderr and "in use by" in r.stderr
    finally:
        hold.kill()
        hold.wait()
    assert not (run / "submitit").exists()

"""The launcher without a cluster: the scripts it would submit (golden file) and bad input."""
import os
import subprocess
import sys

import pytest

from golden_files import REPO, matches_golden, normalized, run_command  # noqa: F401  (normalized: for other tests)

GOLDEN = "submit_dry_run.txt"
# the headline command: no --config on SLURM is the paper's recipe
DRY = ["--cluster", "slurm", "--dry_run", "--budget", "24",
       "--glue", "configs/glue/paper.yaml", "--run_dir", "runs/golden", "--partition", "gpu",
       "--gpus_per_node", "8", "--allocation_hours", "4", "--vocab_size", "30528"]  # no tokenizer needed


def submit(args, **kw):
    return run_command("hpc_bert.submit", args, **kw)


def test_dry_run_scripts_match_golden_file():
    r = submit(DRY)
    assert r.returncode == 0, r.stderr
    matches_golden(r.stdout, GOLDEN)
    assert not os.path.exists(os.path.join(REPO, "runs", "golden"))  # a dry run writes nothing


def test_dry_run_needs_no_slurm_on_the_machine():
    """A laptop (no srun, no sbatch on PATH) previews the scripts; submitit alone would refuse."""
    path = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep)
                           if not any(os.path.exists(os.path.join(d, t)) for t in ("srun", "sbatch")))
    r = submit(DRY, env={**os.environ, "PATH": path})
    assert r.returncode == 0, r.stderr
    matches_golden(r.stdout, GOLDEN)


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
    (["--budget", "1", "--allocation_hours", "0.05", "--vocab_size", "96"], "--cluster local runs at most 6"),
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
    hold = subprocess.Popen([sys.executable, "-c", "import sys, time; from hpc_bert.runlock import RunLock; "
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


def test_submitit_private_api_still_there():
    """sbatch_text is the one user of submitit's private script builder: fail loudly if it moved."""
    import inspect

    import submitit
    from submitit.slurm.slurm import SlurmExecutor
    make = getattr(SlurmExecutor, "_make_submission_file_text", None)
    command = getattr(SlurmExecutor, "_submitit_command_str", None)
    ok = callable(make) and list(inspect.signature(make).parameters) == ["self", "command", "uid"] \
        and isinstance(command, property)
    assert ok, (f"submitit {submitit.__version__} changed SlurmExecutor._make_submission_file_text(command, uid) / "
                "_submitit_command_str, which hpc_bert.launch.submit.sbatch_text needs for --dry_run: adapt "
                "sbatch_text and the submitit pin in pyproject.toml")


def test_allocation_count_is_one_formula():
    from hpc_bert.launch.allocations import ALLOCATION_OVERHEAD_S, allocations_needed
    # 24 h in 4 h SLURM allocations, 90 s signal lead: 14400 - 90 - 90 useful seconds each -> 7
    assert allocations_needed(24, 4, 90, "slurm") == 7
    # the demo: 144 s in 60 s local allocations, 6 s lead: 60 - 6 - 20 = 34 s each -> 5
    assert allocations_needed(0.04, 1 / 60, 6, "local") == 5
    # a lead longer than the allocation still counts a fifth of it as useful
    assert allocations_needed(1, 0.05, 1000, "slurm") == 1 * 3600 // 36
    assert set(ALLOCATION_OVERHEAD_S) == {"slurm", "local"}


def test_split_argv():
    from hpc_bert.launch.submit import split_argv
    mine, train = split_argv(["--budget", "2", "--lr", "1e-3", "--config", "c.yaml", "--fp16", "--dry_run",
                              "--cluster=local", "--help", "--hidden_size", "64", "--no_tensorboard"])
    assert mine == ["--budget", "2", "--pretrain_config", "c.yaml", "--dry_run", "--cluster=local", "--help"]
    assert train == ["--lr", "1e-3", "--fp16", "--hidden_size", "64", "--no_tensorboard"]
    # a flag's value is the next word unless that is a flag; -h takes no value
    assert split_argv(["-h", "x"]) == (["-h"], ["x"])

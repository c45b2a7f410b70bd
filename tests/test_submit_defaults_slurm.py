"""--allocation_hours auto and the headline command's GPU count on the suite's real SLURM: the
partitions of tests/slurm_local.py are debug (MaxTime infinite), short (MaxTime 2 minutes) and
urgent; none has GPUs. Dry runs: nothing is submitted."""
import pytest

from test_submit_slurm import inputs, pretrain_flags, submit  # noqa: F401

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def test_auto_allocation_is_the_partition_max_time(slurm_cluster, inputs, tmp_path):
    r = submit(["--budget", "0.1", "--partition", "short", "--dry_run", "--run_dir", str(tmp_path / "run"),
                *pretrain_flags(inputs)])
    assert r.returncode == 0, r.stderr
    plan = r.stdout.splitlines()[0]
    assert "allocations of 0.0333333 h (auto: the MaxTime of partition short)" in plan
    assert "#SBATCH --time=2" in r.stdout.split("####")[2]


def test_auto_allocation_without_a_limit_is_24_hours_with_a_note(slurm_cluster, inputs, tmp_path):
    r = submit(["--budget", "1", "--partition", "debug", "--dry_run", "--run_dir", str(tmp_path / "run"),
                *pretrain_flags(inputs)])
    assert r.returncode == 0, r.stderr
    assert "allocations of 24 h (auto: no time limit reported for partition debug, so 24 h" in r.stdout


def test_headline_command_on_a_partition_without_gpus_is_one_line(slurm_cluster, tmp_path):
    r = submit(["--budget", "24", "--partition", "debug", "--dry_run", "--vocab_size", "30528",
                "--run_dir", str(tmp_path / "run")])
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "SLURM reports no GPUs in partition debug" in lines[0] and "--gpus_per_node" in lines[0]

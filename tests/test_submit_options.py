"""Site options on submit (--slurm_additional, --glue_slurm_additional, --setup): the scripts they
give (a second golden file) and the one-line refusals before anything is submitted."""

import pytest

from golden_files import matches_golden
from test_submit import DRY, submit

SITE = ["--slurm_additional", "constraint=a100", "--slurm_additional", "exclusive",
        "--slurm_additional", "gres=gpu:a100:8", "--slurm_additional", "reservation=bert",
        "--slurm_additional", "mail-type=END", "--setup", "module load cuda/12.4",
        "--setup", "source venv/bin/activate", "--glue_slurm_additional", "gres=gpu:a100:1",
        "--glue_slurm_additional", "exclusive="]


def sections(out: str) -> tuple[str, str, str]:
    parts = out.split("####")
    return parts[2], parts[4], parts[6]


def test_site_options_dry_run_matches_golden_file():
    r = submit(DRY + SITE)
    assert r.returncode == 0, r.stderr
    matches_golden(r.stdout, "submit_dry_run_site_options.txt")


def test_site_options_reach_every_job_and_glue_overrides():
    pre, glue, agg = sections(submit(DRY + SITE).stdout)
    for script in (pre, glue, agg):
        assert "#SBATCH --constraint=a100" in script and "#SBATCH --reservation=bert" in script
        assert "#SBATCH --mail-type=END" in script
        # setup lines run in the batch script before srun starts the job
        assert script.index("module load cuda/12.4") < script.index("source venv/bin/activate") < script.index("srun")
    assert "#SBATCH --exclusive" in pre and "#SBATCH --gres=gpu:a100:8" in pre
    assert "--exclusive" not in glue and "#SBATCH --gres=gpu:a100:1" in glue
    assert "--exclusive" not in agg and "--gres" not in agg  # the aggregation is a CPU job


@pytest.mark.parametrize("args, needle", [
    (["--slurm_additional", "constrant=a100"], "sbatch has no option --constrant: did you mean constraint"),
    (["--slurm_additional", "partition=gpu"], "submit sets --partition itself: pass --partition instead"),
    (["--slurm_additional", "time=10"], "submit sets --time itself"),
    (["--slurm_additional", "gres"], "--gres needs a value: pass gres=VALUE"),
    (["--glue_slurm_additional", "dependency=afterok:1"], "submit sets --dependency itself"),
    (["--setup", ""], "--setup got an empty command"),
])
def test_bad_site_option_one_line_before_submitting(args, needle, tmp_path):
    r = submit(["--budget", "1", "--cluster", "slurm", "--dry_run", "--run_dir", str(tmp_path / "run"),
                "--config", "configs/pretrain/tiny.yaml", *args])
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert not (tmp_path / "run").exists()


def test_site_options_on_local_cluster_refused(tmp_path):
    r = submit(["--budget", "1", "--cluster", "local", "--run_dir", str(tmp_path / "run"), "--dry_run",
                "--slurm_additional", "exclusive"])
    assert r.returncode == 2 and "--cluster slurm" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_cancel_without_chain_record_one_line(tmp_path):
    (tmp_path / "run").mkdir()
    r = submit(["--cancel", str(tmp_path / "run")])
    assert r.returncode == 2 and "no chain.json" in r.stderr and len(r.stderr.strip().splitlines()) == 1

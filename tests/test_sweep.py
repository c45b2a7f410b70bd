"""python -m hpc_bert.sweep without a cluster: the dry run (golden file), member names, bad input."""
import os

import pytest

from hpc_bert.launch import sweep
from hpc_bert.launch.sweep_grid import flag_value, load, member_name

from golden_files import REPO, matches_golden, run_command
DRY = ["--cluster", "slurm", "--dry_run", "--budget", "24", "--grid", "configs/sweep/paper-lr-batch.yaml",
       "--sweep_dir", "runs/golden-sweep", "--glue", "configs/glue/paper.yaml", "--partition", "gpu",
       "--gpus_per_node", "8", "--allocation_hours", "4", "--array_parallelism", "3",
       "--vocab_size", "30528"]  # no tokenizer needed


def run_sweep(args, **kw):
    return run_command("hpc_bert.sweep", args, timeout=180, **kw)


def test_dry_run_of_the_paper_grid_matches_golden_file():
    r = run_sweep(DRY)
    assert r.returncode == 0, r.stderr
    got = matches_golden(r.stdout, "sweep_dry_run.txt")
    assert not os.path.exists(os.path.join(REPO, "runs", "golden-sweep"))  # a dry run writes nothing
    # what the golden file pins, said in words: 6 members (3 lr x 2 batch sizes), 3 at once, one array
    assert "#SBATCH --array=0-5%3" in got and "lr5e-4_bs4096" in got and "lr2e-3_bs8192" in got
    assert "afterok:<pretrain_array_id>_0" in got and "--job-name=hpc_bert_leaderboard" in got


def test_member_names_are_readable_and_distinct():
    assert member_name({"lr": 2e-3, "train_batch_size": 4096}) == "lr2e-3_bs4096"
    assert member_name({"curve": "exp", "warmup_proportion": 0.06}) == "curve-exp_wu0.06"
    assert member_name({"dataset_path": "/data/shards-b/", "lr": 1e-3}) == "dataset_path-shards-b_lr1e-3"
    assert flag_value(5e-4) == "5e-4" and flag_value(True) == "true" and flag_value([0.25, 0.5]) == "0.25,0.5"
    grid = load(os.path.join(REPO, "configs", "sweep", "paper-lr-batch.yaml"))
    assert len(grid.members) == 6 and len({m.name for m in grid.members}) == 6
    assert grid.members[0].values == {"lr": 5e-4, "train_batch_size": 4096}  # the first axis varies slowest
    assert grid.members[1].values == {"lr": 5e-4, "train_batch_size": 8192}


def _grid(tmp_path, body: str) -> str:
    path = tmp_path / "grid.yaml"
    path.write_text("base: configs/pretrain/tiny.yaml\n" + body)
    return str(path)


@pytest.mark.parametrize("body, needle", [
    ("axes:\n  lrr: [1.0e-3, 2.0e-3]\n", "unknown axis 'lrr': did you mean --lr?"),
    ("axes:\n  lr: [1.0e-3]\n  warmup_proportion: [0.1, 2]\n",
     "member 1 lr1e-3_wu2 (lr=1e-3, warmup_proportion=2): --warmup_proportion must lie in [0, 1)"),
    ("members:\n  - {lr: 1.0e-3}\n  - {lr: 0.001}\n", "members 0 and 1 have the same values (lr=1e-3)"),
    ("axes:\n  lr: []\n", "is empty"),
    ("members: []\n", "is empty"),
    ("axes:\n  total_training_time: [1, 2]\n", "--total_training_time is set by --budget"),
])
def test_bad_grid_is_one_line_and_nothing_is_written(tmp_path, body, needle):
    r = run_sweep(["--budget", "0.01", "--cluster", "local", "--dry_run", "--grid", _grid(tmp_path, body),
                   "--sweep_dir", str(tmp_path / "sweep"), "--vocab_size", "96"])
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert not (tmp_path / "sweep").exists()


def test_sweep_dir_holding_a_different_grid(tmp_path):
    common = ["--budget", "0.01", "--cluster", "local", "--dry_run", "--sweep_dir", str(tmp_path / "sweep"),
              "--vocab_size", "96"]
    first = _grid(tmp_path, "axes:\n  lr: [1.0e-3, 2.0e-3]\n")
    sweep.write_record(sweep.plan(["--grid", first, *common]), [])  # what a submission records first
    (tmp_path / "other").mkdir()
    other = _grid(tmp_path / "other", "axes:\n  lr: [1.0e-3, 3.0e-3]\n")
    r = run_sweep(["--grid", other, *common])
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "holds a different sweep" in lines[0] and "pass a new --sweep_dir" in lines[0]
    assert sorted(os.listdir(tmp_path / "sweep")) == ["sweep.json"]


def test_an_axis_also_passed_as_a_flag(tmp_path):
    r = run_sweep(["--budget", "0.01", "--cluster", "local", "--dry_run", "--sweep_dir", str(tmp_path / "sweep"),
                   "--grid", _grid(tmp_path, "axes:\n  lr: [1.0e-3]\n"), "--lr", "3e-3"])
    assert r.returncode == 2 and "--lr is an axis of the grid" in r.stderr

"""submit checks that the run dir's file system holds keep-k + 1 training checkpoints of the model's
real size plus the fine-tune checkpoints, and says in one line what is missing."""

import pytest

from hpc_bert.errors import UserError
from hpc_bert.launch.disk_room import check_disk_room, room_needed
from hpc_bert.pretrain.checkpoint import checkpoint_bytes
from pretrain_fixtures import small_disk
from test_submit import submit


def test_room_is_keep_plus_one_checkpoints_and_the_fine_tune_ones_less_what_is_written(tmp_path):
    n = 1_000_000
    training, finetune = room_needed(n, keep=2, finetune_checkpoints=3)
    assert training == 3 * checkpoint_bytes(n) and finetune == 3 * 4 * n
    check_disk_room(str(tmp_path / "run"), n, 2, 3, free=training + finetune)  # exactly enough
    with pytest.raises(UserError) as e:
        check_disk_room(str(tmp_path / "run"), n, 2, 3, free=training + finetune - 1)
    line = str(e.value)
    assert "\n" not in line and str(tmp_path) in line and "3 training checkpoints" in line
    assert "--keep_checkpoints 2" in line and "3 fine-tune checkpoints" in line and "--run_dir" in line
    # a resubmission: the checkpoints already written are part of the room it needs
    done = tmp_path / "run" / "checkpoints" / "step_000000010"
    done.mkdir(parents=True)
    (done / "model.pt").write_bytes(b"\0" * checkpoint_bytes(n))
    check_disk_room(str(tmp_path / "run"), n, 2, 3, free=training + finetune - checkpoint_bytes(n))


def test_submit_refuses_a_file_system_too_small_before_submitting(tmp_path):
    with small_disk(tmp_path / "disk", "1m") as disk:
        r = submit(["--cluster", "local", "--budget", "1", "--run_dir", str(disk / "run"), "--vocab_size", "30528",
                    "--dataset_path", str(tmp_path)])
        assert r.returncode == 2, r.stdout + r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and f"{disk} has 0.00 GiB free but the run needs" in lines[0], r.stderr
        assert not (disk / "run").exists()

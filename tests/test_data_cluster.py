"""Data preparation across processes and jobs: resume after a kill, the SLURM job array."""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys

import pytest

from hpc_bert.testing.synthetic import synthetic_corpus
from hpc_bert.data.tokenizer import save_tokenizer, train_wordpiece
from pretrain_fixtures import REPO
from slurm_fixture import job_info, wait_until

FLAGS = ["--max_seq_length", "64", "--dup_factor", "2", "--max_predictions_per_seq", "10", "--num_train_shards", "5",
         "--num_test_shards", "1", "--frac_test", "0.05", "--progress_bar", "false"]


@pytest.fixture(scope="module")
def corpus_and_vocab(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    docs = synthetic_corpus(2400, seed=5)
    (root / "corpus.txt").write_text("".join(d + "\n" for d in docs), encoding="utf-8")
    save_tokenizer(train_wordpiece(docs[:200], vocab_size=600), str(root / "tok"))
    return str(root / "corpus.txt"), str(root / "tok" / "vocab.txt")


def prepare_cmd(corpus, vocab, out, *extra):
    return [sys.executable, "-m", "hpc_bert.data", "prepare", "--input", corpus, "--output_dir", str(out),
            "--tokenizer_name", vocab, *FLAGS, *extra]


def env():
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                PYTHONUNBUFFERED="1")


def hdf5_files(folder):
    return sorted(n for n in os.listdir(folder) if n.endswith(".hdf5"))


def test_submit_takes_prepare_flags_as_one_value():
    from hpc_bert.launch.submit import split_argv

    mine, train = split_argv(["--budget", "1", "--prepare", "--input corpus/ --dup_factor 1", "--lr", "1e-3"])
    assert mine == ["--budget", "1", "--prepare", "--input corpus/ --dup_factor 1"] and train == ["--lr", "1e-3"]
    mine, _ = split_argv(["--prepare=--input c"])
    assert mine == ["--prepare=--input c"]


def test_prepare_for_submit_checks_before_submitting(tmp_path):
    from hpc_bert.data.cluster import prepare_for_submit
    from hpc_bert.errors import UserError

    cfg = prepare_for_submit("--input corpus --tokenizer_name v.txt --dup_factor 1", "slurm", str(tmp_path))
    assert (cfg.output_dir, cfg.jobs.cluster, cfg.samples.dup_factor) == (str(tmp_path), "slurm", 1)
    with pytest.raises(UserError, match="--prepare takes no --cluster / --output_dir"):
        prepare_for_submit("--output_dir x --tokenizer_name v.txt", "slurm", str(tmp_path))
    with pytest.raises(UserError, match="--prepare needs --dataset_path"):
        prepare_for_submit("--tokenizer_name v.txt", "slurm", None)
    with pytest.raises(UserError, match="--dup_factor must be >= 1"):
        prepare_for_submit("--tokenizer_name v.txt --dup_factor 0", "local", str(tmp_path))


def test_data_jobs_are_not_submitted_for_an_unreadable_input(corpus_and_vocab, tmp_path):
    from hpc_bert.data.cluster import prepare_for_submit, submit_prepare
    from hpc_bert.errors import UserError

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt.xz").write_bytes(b"not xz")
    cfg = prepare_for_submit(f"--input {tmp_path / 'in'} --tokenizer_name {corpus_and_vocab[1]}", "local",
                             str(tmp_path / "out"))
    with pytest.raises(UserError, match=r"cannot read input file .*a\.txt\.xz"):
        submit_prepare(cfg)
    assert not (tmp_path / "out" / "submitit").exists()


def temps(folder):
    return [n for n in os.listdir(folder) if n.startswith(".") and n.endswith(".tmp")]  # atomic_output's temp names


@pytest.fixture(scope="module")
def reference(corpus_and_vocab, tmp_path_factory):
    corpus, vocab = corpus_and_vocab
    out = tmp_path_factory.mktemp("reference")
    subprocess.run(prepare_cmd(corpus, vocab, out, "--num_workers", "1"), check=True, env=env(), cwd=REPO,
                   capture_output=True)
    return out


@pytest.mark.slow
def test_kill_during_sample_generation_then_rerun_resumes(corpus_and_vocab, reference, tmp_path):
    corpus, vocab = corpus_and_vocab
    out = tmp_path / "out"
    proc = subprocess.Popen(prepare_cmd(corpus, vocab, out, "--num_workers", "1"), env=env(), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    # killed (SIGKILL: no cleanup) once the first sample shard is complete, inside the next one
    wait_until(lambda: os.path.isdir(out) and hdf5_files(out) and temps(out), 120,
               "a sample shard complete and the next one begun", interval=0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = hdf5_files(out)
    assert 1 <= len(done) < 6, done
    assert temps(out)  # killed in the middle of a shard
    assert not (out / "prepare.json").exists()
    kept = {n: os.stat(out / n).st_mtime_ns for n in done}
    for n in done:  # what is visible is complete
        assert (out / n).read_bytes() == (reference / n).read_bytes()
    r = subprocess.run(prepare_cmd(corpus, vocab, out, "--num_workers", "1"), env=env(), cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"{len(done)} of 6 sample shards are complete from an earlier run: skipped" in r.stdout
    assert {n: os.stat(out / n).st_mtime_ns for n in done} == kept
    assert hdf5_files(out) == hdf5_files(reference)
    for n in hdf5_files(out):
        assert (out / n).read_bytes() == (reference / n).read_bytes()
    assert not temps(out)  # the killed run's temp file is gone


@pytest.mark.slow
def test_cluster_local_runs_the_same_jobs_to_the_same_bytes(corpus_and_vocab, reference, tmp_path):
    corpus, vocab = corpus_and_vocab
    out = tmp_path / "local"
    r = subprocess.run(prepare_cmd(corpus, vocab, out, "--cluster", "local", "--shards_per_task", "4"),
                       env=env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "samples array" in r.stdout and "(2 tasks, afterok:" in r.stdout
    assert hdf5_files(out) == hdf5_files(reference)
    for n in hdf5_files(out):
        assert (out / n).read_bytes() == (reference / n).read_bytes()
    assert json.loads((out / "prepare.json").read_text())["train_samples"] == \
        json.loads((reference / "prepare.json").read_text())["train_samples"]


@pytest.mark.slow
@pytest.mark.slurm
def test_submit_prepare_runs_data_jobs_then_pretraining_afterok(slurm_cluster, corpus_and_vocab, reference, tmp_path):
    """submit --prepare: the split job, the sample array (3 tasks of 2 shards), the summary job,
    then pretraining afterok on the summary, all on the suite's real SLURM."""
    corpus, vocab = corpus_and_vocab
    data, run = tmp_path / "data", tmp_path / "run"
    prepare_flags = " ".join(["--input", corpus, "--tokenizer_name", vocab, *FLAGS, "--cpus_per_task", "1",
                              "--partition", "debug", "--shards_per_task", "2", "--array_parallelism", "2",
                              "--time_min", "10"])
    train_flags = ["--tokenizer_name", vocab, "--dataset_path", str(data), "--hidden_size", "32",
                   "--num_hidden_layers", "2", "--num_attention_heads", "2", "--intermediate_size", "64",
                   "--max_position_embeddings", "64", "--train_batch_size", "16",
                   "--train_micro_batch_size_per_gpu", "8", "--tensorboard", "false", "--progress_bar", "false"]
    r = subprocess.run([sys.executable, "-m", "hpc_bert.submit", "--cluster", "slurm", "--budget", "0.004",
                        "--config", "configs/pretrain/tiny.yaml",
                        "--allocation_hours", "0.1", "--run_dir", str(run), "--partition", "debug",
                        "--cpus_per_task", "1", f"--prepare={prepare_flags}", *train_flags],
                       env=dict(env(), OMP_NUM_THREADS="1"), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if "data split job" in x)
    array_id, summary_id = line.split("samples array ")[1].split()[0], line.split("summary job ")[1].split()[0]
    assert "(3 tasks, afterok:" in line and f"(afterok:{array_id})" in line
    pretrain_id = next(x for x in r.stdout.splitlines() if "pretraining job" in x).split("pretraining job")[1].split()[0]
    assert f"afterok:{summary_id}" in (job_info(slurm_cluster, int(pretrain_id)) or {}).get("Dependency", "")
    wait_until(lambda: (out := _ledger(run)) and out.totals()["done"], 420, "pretraining on the prepared data",
               interval=2)
    # every array task succeeded (submitit's result files), and each step started after the one before
    logs = data / "submitit"
    results = [logs / f"{array_id}_{i}_0_result.pkl" for i in range(3)]
    assert [pickle.loads(p.read_bytes())[0] for p in results] == ["success"] * 3
    summary_done = (logs / f"{summary_id}_0_result.pkl").stat().st_mtime
    assert max(p.stat().st_mtime for p in results) <= os.stat(logs / f"{summary_id}_0_log.out").st_ctime + 1.0
    assert summary_done <= os.stat(run / "submitit" / f"{pretrain_id}_0_log.out").st_ctime + 1.0
    assert json.loads((data / "prepare.json").read_text())["real_token_fraction"] > 0.99
    assert hdf5_files(data) == hdf5_files(reference)
    for n in hdf5_files(data):
        assert (data / n).read_bytes() == (reference / n).read_bytes()


def _ledger(run):
    from hpc_bert.pretrain.clock import Ledger

    try:
        return Ledger.load(str(run))
    except Exception:
        return None

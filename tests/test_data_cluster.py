"""Data preparation across processes and jobs: resume after a kill, the SLURM job array."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from hpc_bert.testing.synthetic import synthetic_corpus
from hpc_bert.data.tokenizer import save_tokenizer, train_wordpiece
from pretrain_fixtures import REPO
from slurm_fixture import wait_until

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
@pytest.mark.slurm
def test_slurm_split_job_then_sample_array_then_summary(slurm_cluster, corpus_and_vocab, reference, tmp_path):
    corpus, vocab = corpus_and_vocab
    out = tmp_path / "slurm"
    r = subprocess.run(prepare_cmd(corpus, vocab, out, "--cluster", "slurm", "--partition", "debug",
                                   "--cpus_per_task", "1", "--shards_per_task", "2", "--array_parallelism", "2",
                                   "--time_min", "10"),
                       env=env(), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if "data split job" in x)
    array_id = line.split("samples array ")[1].split()[0]
    assert "(3 tasks, afterok:" in line
    wait_until(lambda: (out / "prepare.json").exists(), 300, "prepare.json from the summary job", interval=1)
    tasks = slurm_cluster.run("sacct", "-n", "-X", "-P", "-j", array_id, "-o", "JobID,State", check=False).stdout
    assert len([t for t in tasks.splitlines() if t.strip()]) == 3 and "COMPLETED" in tasks, tasks
    assert hdf5_files(out) == hdf5_files(reference)
    for n in hdf5_files(out):
        assert (out / n).read_bytes() == (reference / n).read_bytes()

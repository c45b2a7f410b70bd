"""Three defects a new user hit: a head of another size, warmup >= all steps, and aggregating
results.json files that are not in the grid's tree."""
from __future__ import annotations

import json
import os

import pytest

from glue_fixtures import GLUE_WORDS, glue_rows, make_checkpoint, make_tokenizer, one_line_error, write_glue_tsv
from hpc_bert.glue import aggregate as agg
from hpc_bert.glue import finetune, step_counts
from hpc_bert.glue.cli import main as glue_main

FLAGS = ["--do_train", "--do_eval", "--max_seq_length", "32", "--disable_tqdm", "--logging_steps", "10"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_glue_tsv(tmp_path_factory.mktemp("fixes") / "glue_data", glue_rows(n_train=300, n_dev=16))


@pytest.mark.slow
def test_a_head_of_another_size_needs_ignore_mismatched_sizes(data, tmp_path, capsys):
    from transformers import BertConfig, BertForSequenceClassification
    tokenizer = make_tokenizer(GLUE_WORDS)
    mnli = tmp_path / "mnli_model"  # a fine-tuned MNLI model: a 3-label classification head
    BertForSequenceClassification(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=64, num_labels=3,
                                             max_position_embeddings=64)).save_pretrained(mnli)
    tokenizer.save_pretrained(mnli)
    argv = ["--model_name_or_path", str(mnli), "--task_name", "STS-B", "--data_dir", data,
            "--output_dir", str(tmp_path / "out"), "--max_steps", "2", *FLAGS]
    capsys.readouterr()
    err = one_line_error(capsys, finetune.main, argv)
    assert "--ignore_mismatched_sizes" in err and "3 label(s)" in err and "STS-B needs 1" in err
    assert not (tmp_path / "out").exists()  # refused before anything was written
    assert finetune.main(argv + ["--ignore_mismatched_sizes"]) == 0
    rec = json.loads((tmp_path / "out" / "results.json").read_text())
    assert rec["global_step"] == 2 and set(rec["scores"]) == {"STS-B"}


def test_warmup_cap_is_a_pure_function_of_the_step_count():
    assert step_counts.training_steps(300, 32, 1, 5, -1) == 50  # the seed's MRPC command on 300 examples
    assert step_counts.training_steps(300, 32, 2, 5, -1) == 25
    assert step_counts.training_steps(300, 32, 1, 5, 7) == 7
    capped, note = step_counts.capped_warmup(50, 50)
    assert capped == 5 and "--warmup_steps 50" in note and "50 training steps" in note
    assert step_counts.capped_warmup(80, 50)[0] == 5
    assert step_counts.capped_warmup(49, 50) == (49, None)
    assert step_counts.capped_warmup(0.5, 2) == (0.5, None)  # a fraction of the steps never needs a cap


@pytest.mark.slow
def test_seed_mrpc_command_on_300_examples_trains_with_a_capped_warmup(data, tmp_path, capsys):
    """--warmup_steps 50 --num_train_epochs 5 --per_device_train_batch_size 32 on 300 examples:
    50 steps, which divided by zero in the polynomial schedule."""
    ckpt = make_checkpoint(tmp_path / "ckpt", GLUE_WORDS, layers=1, max_positions=64)
    out = tmp_path / "mrpc"
    assert finetune.main(["--model_name_or_path", ckpt, "--task_name", "MRPC", "--data_dir", data,
                          "--output_dir", str(out), "--lr_scheduler_type", "polynomial", "--warmup_steps", "50",
                          "--num_train_epochs", "5", "--per_device_train_batch_size", "32",
                          "--learning_rate", "5e-5", *FLAGS]) == 0
    notes = [x for x in capsys.readouterr().err.splitlines() if "warmup capped" in x]
    assert len(notes) == 1 and "at 5 steps" in notes[0]
    rec = json.loads((out / "results.json").read_text())
    assert rec["global_step"] == 50 and rec["warmup_steps"] == 5 and rec["num_train_examples"] == 300


def _record(path, task, checkpoint, seed, score):
    os.makedirs(path, exist_ok=True)
    rec = {"task": task, "learning_rate": 5e-5, "seed": seed, "checkpoint": checkpoint,
           "per_device_train_batch_size": 32, "score": score, "scores": {task: score},
           "metrics": {"dev": {"accuracy": score}}}
    with open(os.path.join(path, "results.json"), "w") as fh:
        json.dump(rec, fh)


def test_aggregate_reads_any_tree_of_hand_run_results(tmp_path, capsys):
    """finetune --output_dir anywhere: each record names its task and checkpoint."""
    _record(tmp_path / "rte_try", "RTE", "/models/bert/final", 1, 0.60)
    _record(tmp_path / "more" / "rte" / "seed2", "RTE", "/models/bert/final/", 2, 0.70)
    _record(tmp_path / "more" / "rte" / "seed3", "RTE", "/models/bert/final", 3, 0.80)
    _record(tmp_path / "a" / "b" / "c" / "d" / "sst", "SST-2", "/models/bert/marker_0.5", 1, 0.75)
    assert glue_main(["aggregate", str(tmp_path)]) == 0
    rows = {r.checkpoint: r for r in agg.summarize(agg.collect(str(tmp_path)))}
    assert set(rows) == {"final", "marker_0.5"}
    assert rows["final"].tasks["RTE"].seeds == [1, 2, 3] and rows["final"].tasks["RTE"].score == 0.70
    assert rows["marker_0.5"].tasks["SST-2"].score == 0.75
    table = (tmp_path / "glue_results.md").read_text()
    assert "| marker_0.5 | 0.5 |" in table and "| final | 1 |" in table

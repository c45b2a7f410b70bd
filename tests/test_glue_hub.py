"""The hub route (--data_dir unset) read offline from a local copy in the hub's `glue` schema gives
the same examples as GLUE's TSV files: train, dev and test splits of all nine tasks, and AX."""
from __future__ import annotations

import json

import pytest

from glue_fixtures import GLUE_WORDS, glue_rows, make_checkpoint, one_line_error, write_glue_tsv, write_hub_copy
from hpc_bert.glue import finetune
from hpc_bert.glue.tasks import TASK_ORDER, get_task, load_hub_task, load_test, load_tsv_task

pytest.importorskip("datasets")


def same_examples(tsv, hub, regression):
    assert len(tsv) == len(hub) > 0
    for t, h in zip(tsv, hub):
        assert (t.text_a, t.text_b) == (h.text_a, h.text_b)
        if regression and t.label != "":
            assert h.label == pytest.approx(t.label, abs=1e-5)  # the hub stores STS-B scores as float32
        else:
            assert t.label == h.label


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["save_to_disk", "parquet"])
def test_hub_copy_gives_the_tsv_examples_for_every_task_and_split(tmp_path, fmt):
    rows = glue_rows()
    data = write_glue_tsv(tmp_path / "glue_data", rows)
    hub = write_hub_copy(tmp_path / "hub", rows, fmt)
    for name in TASK_ORDER:
        task = get_task(name)
        tsv, from_hub = load_tsv_task(data, task), load_hub_task(task, True, source=hub)
        assert sorted(tsv) == sorted(from_hub) == sorted(["train", *task.splits])
        for split in tsv:
            same_examples(tsv[split], from_hub[split], task.is_regression)
        if not task.is_regression:  # string labels of the TSV, whatever the hub's class order
            assert {e.label for e in from_hub["train"]} == set(task.labels)
        tsv_test, hub_test = load_test(task, data), load_test(task, None, hub)
        assert sorted(tsv_test) == sorted(hub_test) == sorted(t.split for t in task.test_splits)
        for split, (indices, examples) in tsv_test.items():
            assert indices == hub_test[split][0]
            same_examples(examples, hub_test[split][1], task.is_regression)
    assert len(load_test(get_task("MNLI"), None, hub)["ax"][0]) == len(rows["AX"]["test"])


@pytest.mark.slow
def test_finetune_reads_the_hub_copy_without_data_dir(tmp_path, capsys):
    rows = glue_rows()
    hub = write_hub_copy(tmp_path / "hub", rows)
    ckpt = make_checkpoint(tmp_path / "ckpt", GLUE_WORDS)
    out = tmp_path / "out"
    assert finetune.main(["--model_name_or_path", ckpt, "--task_name", "RTE", "--dataset_name", hub,
                          "--output_dir", str(out), "--do_train", "--do_eval", "--do_predict", "--max_steps", "2",
                          "--max_seq_length", "32", "--disable_tqdm"]) == 0
    rec = json.loads((out / "results.json").read_text())
    assert rec["num_train_examples"] == len(rows["RTE"]["train"])
    assert rec["num_eval_examples"] == {"dev": len(rows["RTE"]["dev"])}
    lines = (out / rec["predictions"]["test"]).read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 1 + len(rows["RTE"]["test"])
    # A copy without the task's folder is one line naming the option, before any model loads.
    capsys.readouterr()
    err = one_line_error(capsys, finetune.main, ["--model_name_or_path", ckpt, "--task_name", "CoLA",
                                                 "--dataset_name", str(tmp_path / "ckpt"), "--output_dir",
                                                 str(tmp_path / "o2"), "--do_train"])
    assert "--dataset_name" in err and "cola/" in err

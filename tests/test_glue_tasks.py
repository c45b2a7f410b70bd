"""Every GLUE task's TSV layout parses, and bad input ends in one clear line."""
from __future__ import annotations

import os

import pytest

from hpc_bert.glue import finetune
from hpc_bert.errors import UserError
from hpc_bert.glue.cli import main as glue_main
from glue_fixtures import one_line_error
from hpc_bert.glue.tasks import TASK_ORDER, TASKS, examples_from_hub, get_task, load_task, read_split

# Two data rows per task, in GLUE's exact formats (headers as download_glue_data.py writes
# them). Sentences carry quote characters on purpose: GLUE files are not quoted CSV.
FILES = {
    "CoLA": {
        "train.tsv": ["gj04\t1\t\tOur friends won't buy this analysis, let alone the next one we propose.",
                      "gj04\t0\t*\tThey drank the pub \"dry."],
        "dev.tsv": ["gj04\t1\t\tThe sailors rode the breeze clear of the rocks.",
                    "gj04\t0\t*\tThe more you eat, the most you want."],
    },
    "SST-2": {
        "train.tsv": ["sentence\tlabel", "hide new secretions from the parental units \t0",
                      "contains no wit , only labored gags \t0", "that loves its characters \t1"],
        "dev.tsv": ["sentence\tlabel", "it 's a charming and often affecting journey . \t1",
                    "unflinchingly bleak and \" desperate \t0"],
    },
    "MRPC": {
        "train.tsv": ["\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String",
                      "1\t702876\t702977\tAmrozi accused his brother , whom he called \" the witness \" .\t"
                      "Referring to him as only \" the witness \" , Amrozi accused his brother .",
                      "0\t2108705\t2108831\tYucaipa owned Dominick 's before selling the chain .\t"
                      "Yucaipa bought Dominick 's in 1995 ."],
        "dev.tsv": ["\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String",
                    "1\t1355540\t1355592\tHe said the foodservice pie business doesn 't fit .\t"
                    "\" The foodservice pie business does not fit , \" he said ."],
    },
    "QQP": {
        "train.tsv": ["id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
                      "133273\t213221\t213222\tHow is the life of a math student?\tWhich level of prepration "
                      "is enough for the exam jlpt5?\t0",
                      "402555\t536040\t536041\tHow do I control my horny emotions?\tHow do you control your "
                      "horniness?\t1",
                      "363362\t493340\t493341\tA broken row with too few columns"],
        "dev.tsv": ["id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
                    "201359\t303345\t303346\tWhy are African-Americans so beautiful?\tWhy are hispanics so "
                    "beautiful?\t0"],
    },
    "STS-B": {
        "train.tsv": ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
                      "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\t"
                      "An air plane is taking off.\t5.000",
                      "1\tmain-captions\tMSRvid\t2012test\t0004\tnone\tnone\tA man is playing a large flute.\t"
                      "A man is playing a flute.\t3.800"],
        "dev.tsv": ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
                    "0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man with a hard hat is dancing.\t"
                    "A man wearing a hard hat is dancing.\t5.000"],
    },
    "MNLI": {
        "train.tsv": ["index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                      "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label",
                      "0\t31193\t31193n\tgovernment\t( ( Conceptually cream ) ... )\t( ( Product ... ) )\t"
                      "(ROOT (S ...))\t(ROOT (S ...))\tConceptually cream skimming has two basic dimensions - "
                      "product and geography.\tProduct and geography are what make cream skimming work. \t"
                      "neutral\tneutral"],
        "dev_matched.tsv": ["index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                            "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\t"
                            "label4\tlabel5\tgold_label",
                            "0\t63735\t63735n\tslate\t( x )\t( y )\t(ROOT x)\t(ROOT y)\tThe new rights are nice "
                            "enough\tEveryone really likes the newest benefits \tneutral\tentailment\tneutral\t"
                            "neutral\tneutral\tneutral"],
        "dev_mismatched.tsv": ["index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                               "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\t"
                               "label4\tlabel5\tgold_label",
                               "0\t75290\t75290c\tletters\t( x )\t( y )\t(ROOT x)\t(ROOT y)\tYour contribution "
                               "helped make it possible.\tYour contributions were of no help.\tcontradiction\t"
                               "contradiction\tcontradiction\tcontradiction\tcontradiction\tcontradiction"],
    },
    "QNLI": {
        "train.tsv": ["index\tquestion\tsentence\tlabel",
                      "0\tWhen did the third Digimon series begin?\tUnlike the two seasons before it, it was "
                      "the first series to not focus on a single storyline.\tnot_entailment"],
        "dev.tsv": ["index\tquestion\tsentence\tlabel",
                    "0\tWhat came into force after the new constitution was herald?\tAs of that day, the new "
                    "constitution heralding the Second Republic came into force.\tentailment"],
    },
    "RTE": {
        "train.tsv": ["index\tsentence1\tsentence2\tlabel",
                      "0\tNo Weapons of Mass Destruction Found in Iraq Yet.\tWeapons of Mass Destruction Found "
                      "in Iraq.\tnot_entailment"],
        "dev.tsv": ["index\tsentence1\tsentence2\tlabel",
                    "0\tDana Reeve, the widow of the actor Christopher Reeve, has died.\tChristopher Reeve had "
                    "an accident.\tnot_entailment",
                    "1\tYet, we now are discovering that antibiotics are losing their effectiveness.\tBacteria "
                    "is winning the war against antibiotics.\tentailment"],
    },
    "WNLI": {
        "train.tsv": ["index\tsentence1\tsentence2\tlabel",
                      "0\tI stuck a pin through a carrot. When I pulled the pin out, it had a hole.\tThe carrot "
                      "had a hole.\t1"],
        "dev.tsv": ["index\tsentence1\tsentence2\tlabel",
                    "0\tThe drain is clogged with hair. It has to be cleaned.\tThe hair has to be cleaned.\t0"],
    },
}


def write_glue(root, tasks=TASK_ORDER):
    for task in tasks:
        os.makedirs(root / task, exist_ok=True)
        for name, lines in FILES[task].items():
            (root / task / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(root)


def test_every_task_parses(tmp_path, capsys):
    data = write_glue(tmp_path)
    loaded = {t: load_task(get_task(t), data) for t in TASK_ORDER}
    assert set(loaded) == set(TASKS)
    cola = loaded["CoLA"]
    assert [e.label for e in cola["train"]] == ["1", "0"] and cola["train"][1].text_a == 'They drank the pub "dry.'
    assert cola["train"][0].text_b is None
    sst = loaded["SST-2"]
    assert [e.label for e in sst["train"]] == ["0", "0", "1"] and sst["dev"][1].text_a.startswith("unflinchingly")
    mrpc = loaded["MRPC"]["train"]  # the BOM before "Quality" does not hide the column
    assert mrpc[0].label == "1" and mrpc[0].text_a.startswith("Amrozi") and mrpc[0].text_b.startswith("Referring")
    qqp = loaded["QQP"]["train"]  # the short row is skipped with a note
    assert [e.label for e in qqp] == ["0", "1"] and qqp[1].text_b == "How do you control your horniness?"
    assert "skipped 1 malformed row" in capsys.readouterr().err
    stsb = loaded["STS-B"]
    assert [e.label for e in stsb["train"]] == [5.0, 3.8] and stsb["dev"][0].text_b.startswith("A man wearing")
    mnli = loaded["MNLI"]
    assert set(mnli) == {"train", "dev_matched", "dev_mismatched"}
    assert mnli["train"][0].label == "neutral" and mnli["train"][0].text_a.startswith("Conceptually")
    assert mnli["dev_matched"][0].label == "neutral" and mnli["dev_mismatched"][0].label == "contradiction"
    assert loaded["QNLI"]["dev"][0].label == "entailment" and loaded["QNLI"]["dev"][0].text_a.startswith("What")
    assert [e.label for e in loaded["RTE"]["dev"]] == ["not_entailment", "entailment"]
    assert loaded["WNLI"]["train"][0].label == "1"


def test_task_names_are_forgiving_and_unknown_ones_are_named():
    assert get_task("sst2").name == get_task("SST-2").name == "SST-2"
    assert get_task("sts-b").name == get_task("stsb").name == "STS-B"
    assert get_task("mrpc").name == "MRPC" and get_task("mnli").splits == ("dev_matched", "dev_mismatched")
    with pytest.raises(UserError, match="unknown GLUE task 'SQuAD': choose one of MNLI, QQP"):
        get_task("SQuAD")


def test_data_dir_may_be_the_task_folder_itself(tmp_path):
    write_glue(tmp_path, ["RTE"])
    assert len(load_task(get_task("RTE"), str(tmp_path / "RTE"))["dev"]) == 2


def test_missing_file_names_it_and_the_layout(tmp_path):
    write_glue(tmp_path, ["MNLI"])
    os.remove(tmp_path / "MNLI" / "dev_mismatched.tsv")
    with pytest.raises(UserError) as exc:
        load_task(get_task("MNLI"), str(tmp_path))
    msg = str(exc.value)
    assert "dev_mismatched.tsv does not exist" in msg and "--data_dir DIR" in msg and "\n" not in msg


def test_wrong_columns_and_labels_are_named(tmp_path):
    write_glue(tmp_path, ["SST-2", "RTE", "STS-B"])
    with pytest.raises(UserError, match=r"has no column '#1 String'"):
        read_split(str(tmp_path / "SST-2"), get_task("MRPC"), "train.tsv")
    (tmp_path / "RTE" / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    with pytest.raises(UserError, match=r"dev.tsv:2: label 'maybe' is not one of RTE's labels"):
        read_split(str(tmp_path), get_task("RTE"), "dev.tsv")
    lines = FILES["STS-B"]["dev.tsv"][0] + "\n0\tg\tf\ty\to\ts\ts\ta\tb\tfive\n"
    (tmp_path / "STS-B" / "dev.tsv").write_text(lines)
    with pytest.raises(UserError, match=r"score 'five' is not a number"):
        read_split(str(tmp_path), get_task("STS-B"), "dev.tsv")


def test_hub_rows_map_to_tsv_labels():
    mnli = examples_from_hub(get_task("mnli"), [{"premise": "p", "hypothesis": "h", "label": 2, "idx": 0}],
                             ["entailment", "neutral", "contradiction"])
    assert (mnli[0].text_a, mnli[0].text_b, mnli[0].label) == ("p", "h", "contradiction")
    wnli = examples_from_hub(get_task("wnli"), [{"sentence1": "a", "sentence2": "b", "label": 1}],
                             ["not_entailment", "entailment"])
    assert wnli[0].label == "1"
    sst = examples_from_hub(get_task("sst2"), [{"sentence": "s", "label": 0}], ["negative", "positive"])
    assert (sst[0].text_b, sst[0].label) == (None, "0")
    stsb = examples_from_hub(get_task("stsb"), [{"sentence1": "a", "sentence2": "b", "label": 3.2}], None)
    assert stsb[0].label == 3.2


def test_finetune_cli_errors_are_one_line(tmp_path, capsys):
    base = ["--model_name_or_path", str(tmp_path / "ckpt"), "--output_dir", str(tmp_path / "out"), "--do_train"]
    err = one_line_error(capsys, finetune.main, base + ["--task_name", "SQuAD"])
    assert "unknown GLUE task 'SQuAD'" in err
    err = one_line_error(capsys, finetune.main, base + ["--task_name", "MRPC", "--learning_rat", "1e-5"])
    assert "unknown flag --learning_rat: did you mean --learning_rate" in err
    err = one_line_error(capsys, finetune.main, base + ["--task_name", "MRPC", "--evaluation_strategy", "often"])
    assert "--eval_strategy 'often' is not valid" in err
    err = one_line_error(capsys, finetune.main, base + ["--task_name", "MRPC", "--eval_strategy", "steps",
                                                         "--evaluation_strategy", "epoch"])
    assert "disagree" in err
    err = one_line_error(capsys, finetune.main, base + ["--task_name", "MRPC", "--dropout", "1.5"])
    assert "--dropout must be in [0, 1), got 1.5" in err
    err = one_line_error(capsys, finetune.main, ["--task_name", "MRPC", "--output_dir", "x", "--do_eval"])
    assert "--model_name_or_path is required" in err
    err = one_line_error(capsys, finetune.main, base + ["--task_name", "MRPC"])
    assert "ckpt does not exist" in err
    (tmp_path / "ckpt").mkdir()
    err = one_line_error(capsys, finetune.main, base + ["--task_name", "MRPC"])
    assert "has no config.json" in err
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "results.json").write_text("{}")
    err = one_line_error(capsys, finetune.main, base + ["--task_name", "MRPC"])
    assert "already holds results" in err and "--overwrite_output_dir" in err


def test_missing_data_is_reported_before_the_model_loads(tmp_path, capsys, monkeypatch):
    """A checkpoint folder that looks loadable, but GLUE files that are not there."""
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    monkeypatch.setattr(finetune, "load_tokenizer", lambda cfg: None)  # the data check needs no tokenizer
    argv = ["--model_name_or_path", str(ckpt), "--output_dir", str(tmp_path / "out"), "--do_train",
            "--task_name", "CoLA"]
    err = one_line_error(capsys, finetune.main, argv + ["--data_dir", str(tmp_path / "nowhere")])
    assert "--data_dir" in err and "nowhere does not exist" in err
    (tmp_path / "glue").mkdir()
    err = one_line_error(capsys, finetune.main, argv + ["--data_dir", str(tmp_path / "glue")])
    assert "CoLA/train.tsv does not exist" in err
    err = one_line_error(capsys, finetune.main, argv)  # no --data_dir: the hub, unreachable here
    assert "--data_dir DIR" in err


def test_glue_cli_errors_are_one_line(tmp_path, capsys):
    err = one_line_error(capsys, glue_main, ["expnd"])
    assert "unknown command 'expnd'" in err
    err = one_line_error(capsys, glue_main, ["expand"])
    assert "missing CONFIG" in err
    err = one_line_error(capsys, glue_main, ["expand", str(tmp_path / "none.yaml"), "--run_dir", "r"])
    assert "none.yaml does not exist" in err
    err = one_line_error(capsys, glue_main, ["aggregate", str(tmp_path / "norun")])
    assert "norun does not exist" in err


def test_the_seed_command_parses():
    """The seed's run_glue flags, verbatim; --evaluation_strategy is transformers 5's eval_strategy."""
    from hpc_bert.config.flags import parse_config
    argv = ("--model_name_or_path ckpt --task_name MRPC --max_seq_length 128 --output_dir out "
            "--overwrite_output_dir --do_train --do_eval --evaluation_strategy steps "
            "--per_device_train_batch_size 32 --gradient_accumulation_steps 1 --per_device_eval_batch_size 32 "
            "--learning_rate 5e-5 --weight_decay 0.01 --eval_steps 50 --max_grad_norm 1.0 --num_train_epochs 5 "
            "--lr_scheduler_type polynomial --warmup_steps 50").split()
    cfg, _ = parse_config(finetune.FinetuneConfig, argv, prog="finetune")
    assert cfg.overwrite_output_dir and cfg.do_train and cfg.do_eval
    assert cfg.eval_strategy == cfg.evaluation_strategy == "steps" and cfg.eval_steps == 50
    assert (cfg.learning_rate, cfg.weight_decay, cfg.num_train_epochs, cfg.warmup_steps) == (5e-5, 0.01, 5.0, 50)
    assert cfg.lr_scheduler_type == "polynomial" and cfg.per_device_train_batch_size == 32

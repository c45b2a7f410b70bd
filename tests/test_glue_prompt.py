"""Prompt-based fine-tuning (hpc_bert/glue/prompt.py): templates, label words, the classifier."""
from __future__ import annotations

import json
import os

import pytest

from hpc_bert.glue import finetune
from hpc_bert.errors import ConfigError, UserError
from hpc_bert.glue import prompt
from hpc_bert.glue.tasks import TASKS, Example, get_task
from glue_fixtures import (FILLER, NEGATIVE, POSITIVE, SPECIALS, TRAIN_FLAGS, make_checkpoint, make_tokenizer,
                           one_line_error, write_keyword_sst2)

WORDS = SPECIALS + POSITIVE + NEGATIVE + FILLER + "it was ? , . yes no maybe terrible great".split()


def test_every_classification_task_has_a_default_prompt():
    for task in TASKS.values():
        if task.is_regression:
            with pytest.raises(ConfigError, match="regression task: drop --prompt"):
                prompt.resolve(task, None, None)
            continue
        template, words = prompt.resolve(task, None, None)
        assert template.count("{mask}") == 1 and len(words) == task.num_labels
        assert ("{text_b}" in template) == (task.text_b is not None)
    assert prompt.resolve(get_task("SST-2"), None, "bad, good") == ("{text_a} It was {mask} .", ("bad", "good"))


@pytest.mark.parametrize("task, template, verbalizer, message", [
    ("SST-2", "{text_a} It was [MASK] .", None, "must hold {mask} exactly once"),
    ("SST-2", "{text_a} {mask} {mask}", None, "must hold {mask} exactly once"),
    ("SST-2", "{sentence} It was {mask} .", None, "slot {sentence}: use only {text_a}, {text_b} and {mask}"),
    ("SST-2", "{text_a} {mask} {text_b}", None, "SST-2 has one sentence per example"),
    ("RTE", "{text_a} ? {mask}", None, "must hold {text_b} exactly once for RTE"),
    ("SST-2", None, "bad,good,fine", "one word per label of SST-2 (0, 1), got 'bad,good,fine'"),
    ("MNLI", None, "yes,no", "e.g. --verbalizer no,yes,maybe"),
    ("SST-2", None, "bad,", "one word per label"),
])
def test_bad_templates_and_label_words_are_named(task, template, verbalizer, message):
    with pytest.raises(ConfigError) as exc:
        prompt.resolve(get_task(task), template, verbalizer)
    assert message in str(exc.value)


def test_label_words_must_be_distinct_single_tokens():
    tok = make_tokenizer(WORDS)
    assert prompt.label_token_ids(tok, ("bad", "good")) == [tok.convert_tokens_to_ids(w) for w in ("bad", "good")]
    with pytest.raises(UserError, match="'fantastic' is not one token of the tokenizer"):
        prompt.label_token_ids(tok, ("bad", "fantastic"))
    with pytest.raises(UserError, match="'good bad' is not one token"):
        prompt.label_token_ids(tok, ("good bad", "great"))
    with pytest.raises(UserError, match="map to the same token"):
        prompt.label_token_ids(tok, ("good", "GOOD"))  # the tokenizer lower-cases


def test_long_texts_are_cut_so_that_the_mask_survives():
    tok = make_tokenizer(WORDS)
    long_text = " ".join(["the good movie"] * 30)
    short, max_len = "a dull plot", 24
    single = prompt.render_prompts([Example(long_text, None, "1"), Example(short, None, "0")],
                                   "{text_a} It was {mask} .", tok, max_len)
    assert single[1] == f"{short} It was [MASK] ."  # short texts are left alone
    ids = tok(single[0])["input_ids"]
    assert len(ids) <= max_len and ids[-4:-1] == tok(["was", "[MASK]", "."], add_special_tokens=False,
                                                      is_split_into_words=True)["input_ids"]
    assert long_text.startswith(single[0][:-len(" It was [MASK] .")])  # a verbatim prefix of the text
    pair = prompt.render_prompts([Example(short, long_text, "entailment")], "{text_a} ? {mask} , {text_b}", tok,
                                 max_len)[0]
    assert pair.startswith(f"{short} ? [MASK] , the good movie") and len(tok(pair)["input_ids"]) <= max_len
    with pytest.raises(UserError, match="--max_seq_length 6 leaves no room for text"):
        prompt.render_prompts([Example(short, None, "0")], "{text_a} It was quite a movie , {mask} .", tok, 6)


@pytest.mark.parametrize("architecture", ["post-ln", "pre-ln"])
def test_prompt_logits_are_the_mlm_logits_of_the_label_words_at_the_mask(tmp_path, architecture):
    import torch
    from transformers import AutoModelForMaskedLM

    from hpc_bert.config.pretrain import ModelConfig
    from hpc_bert.model.bert import build_hf_model

    tok = make_tokenizer(WORDS)
    torch.manual_seed(0)
    if architecture == "post-ln":
        mlm = AutoModelForMaskedLM.from_pretrained(make_checkpoint(tmp_path / "ckpt", WORDS))
    else:
        mlm = build_hf_model(ModelConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=64, encoder_ln_mode="pre-ln"), len(tok))
    mlm.eval()
    label_ids = prompt.label_token_ids(tok, ("terrible", "great"))
    classifier = prompt.prompt_classifier(mlm, label_ids, tok.mask_token_id)
    texts = prompt.render_prompts([Example("a good movie", None, "1"), Example("the plot was dull and weak", None, "0")],
                                  "{text_a} It was {mask} .", tok, 32)
    batch = tok(texts, padding=True, return_tensors="pt")
    labels = torch.tensor([1, 0])
    out = classifier(**batch, labels=labels)
    full = mlm(**batch).logits
    where = (batch["input_ids"] == tok.mask_token_id).nonzero()
    assert [int(r) for r, _ in where] == [0, 1]  # one mask per row, at different positions
    expected = full[where[:, 0], where[:, 1]][:, label_ids]
    torch.testing.assert_close(out.logits, expected)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(expected, labels))
    out.loss.backward()  # the loss trains the encoder as well as the head
    assert mlm.base_model.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert sum(p.numel() for p in classifier.parameters()) == sum(p.numel() for p in mlm.parameters())


def test_prompt_flags_errors_are_one_line(tmp_path, capsys):
    base = ["--model_name_or_path", str(tmp_path / "ckpt"), "--output_dir", str(tmp_path / "out"), "--do_train"]
    err = one_line_error(capsys, finetune.main, base + ["--task_name", "SST-2", "--verbalizer", "bad,good"])
    assert "pass --prompt too" in err
    err = one_line_error(capsys, finetune.main, base + ["--task_name", "STS-B", "--prompt"])
    assert "STS-B is a regression task: drop --prompt" in err
    err = one_line_error(capsys, finetune.main, base + ["--task_name", "SST-2", "--prompt", "--verbalizer", "x"])
    assert "--verbalizer needs one word per label of SST-2" in err


@pytest.mark.slow
def test_prompt_finetune_beats_chance_and_saves_a_reloadable_mlm(tmp_path, capsys):
    """Head-free fine-tuning end to end: Trainer, prompt encoding, the label words, --save_model."""
    from transformers import AutoModelForMaskedLM

    data = write_keyword_sst2(tmp_path / "glue_data")
    ckpt = make_checkpoint(tmp_path / "ckpt", WORDS)
    out = str(tmp_path / "out")
    argv = ["--model_name_or_path", ckpt, "--task_name", "SST-2", "--data_dir", data, "--output_dir", out,
            # an untrained model: the mask slot must first learn to see the keyword (5 epochs, not 3)
            "--learning_rate", "3e-3", "--num_train_epochs", "5", "--seed", "1", "--prompt",
            "--verbalizer", "bad,good", "--save_model", *TRAIN_FLAGS]
    capsys.readouterr()  # save_pretrained's progress bar
    # the words must be in the vocabulary: checked before any training
    err = one_line_error(capsys, finetune.main, argv[:-len(TRAIN_FLAGS)] + ["--verbalizer", "bad,superbly",
                                                                             *TRAIN_FLAGS])
    assert "'superbly' is not one token" in err and not os.path.exists(os.path.join(out, "results.json"))
    err = one_line_error(capsys, finetune.main, argv + ["--max_seq_length", "6"])  # [CLS] it was [MASK] . [SEP]
    assert "--max_seq_length 6 leaves no room for text in the prompt template (6 tokens)" in err
    assert finetune.main(argv) == 0
    rec = json.load(open(os.path.join(out, "results.json")))
    assert rec["score"] > 0.8, rec  # chance is 0.5 on the balanced dev set
    assert rec["config"]["prompt"] and rec["config"]["prompt_template"] == "{text_a} It was {mask} ."
    assert rec["config"]["verbalizer"] == "bad,good"
    # the saved MLM with the same template and words reproduces the score (eval only, no training)
    AutoModelForMaskedLM.from_pretrained(out)
    again = str(tmp_path / "again")
    assert finetune.main(["--model_name_or_path", out, "--task_name", "SST-2", "--data_dir", data,
                          "--output_dir", again, "--do_eval", "--max_seq_length", "32", "--prompt",
                          "--verbalizer", "bad,good", "--disable_tqdm"]) == 0
    assert json.load(open(os.path.join(again, "results.json")))["score"] == pytest.approx(rec["score"])

"""GLUE test helpers: a real WordPiece tokenizer and tiny BERT checkpoint built in the test (no hub),
a keyword SST-2 task that a working fine-tune solves, and the one-line error check."""
from __future__ import annotations

import os
import random

import pytest

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
POSITIVE = "good great fine lovely superb brilliant".split()
NEGATIVE = "bad awful dull boring weak poor".split()
FILLER = "the a movie film plot actor story scene it was is and very quite this that".split()


def make_tokenizer(words):
    """A real fast WordPiece tokenizer over an explicit vocab (BertTokenizerFast(vocab_file=...)
    silently builds a 5-token vocab in transformers 5, so the model is built by hand)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + sorted(set(words) - set(SPECIALS)))}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tok.decoder = decoders.WordPiece()
    wrapped = BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                sep_token="[SEP]", mask_token="[MASK]")
    assert len(wrapped) == len(vocab)
    return wrapped


def make_checkpoint(path, words, hidden=32, layers=2, max_positions=128):
    """A tiny BertForMaskedLM + tokenizer saved as the pretraining's fine-tune checkpoints are."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    tokenizer = make_tokenizer(words)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=max_positions,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    BertForMaskedLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def keyword_sentence(rng, label):
    words = [rng.choice(FILLER) for _ in range(rng.randint(4, 9))]
    words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if label else NEGATIVE))
    return " ".join(words)


def write_keyword_sst2(root, n_train=400, n_dev=200):
    rng = random.Random(0)
    task = os.path.join(root, "SST-2")
    os.makedirs(task, exist_ok=True)
    for name, n in (("train", n_train), ("dev", n_dev)):
        with open(os.path.join(task, f"{name}.tsv"), "w") as fh:
            fh.write("sentence\tlabel\n")
            for i in range(n):
                label = i % 2
                fh.write(f"{keyword_sentence(rng, label)}\t{label}\n")
    return str(root)


TRAIN_FLAGS = ["--do_train", "--do_eval", "--max_seq_length", "32", "--per_device_train_batch_size", "16",
               "--per_device_eval_batch_size", "64", "--weight_decay", "0.01", "--max_grad_norm", "1.0",
               "--lr_scheduler_type", "polynomial", "--warmup_steps", "10", "--gradient_accumulation_steps", "1",
               "--disable_tqdm", "--logging_steps", "10"]


def one_line_error(capsys, fn, argv):
    """fn(argv) exits with status 2 and one stderr line; returns that line."""
    with pytest.raises(SystemExit) as exc:
        fn(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("hpc_bert: error: "), err
    return err

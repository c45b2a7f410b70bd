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


# ---- every GLUE task in its real file format (headers, column orders, test files, AX) ----------

# The labels as GLUE's TSV files write them, and the hub's class names in its index order.
TSV_LABELS = {"CoLA": ("0", "1"), "SST-2": ("0", "1"), "MRPC": ("0", "1"), "QQP": ("0", "1"), "STS-B": None,
              "MNLI": ("contradiction", "entailment", "neutral"), "QNLI": ("entailment", "not_entailment"),
              "RTE": ("entailment", "not_entailment"), "WNLI": ("0", "1")}
HUB_CLASS_NAMES = {"cola": ["unacceptable", "acceptable"], "sst2": ["negative", "positive"],
                   "mrpc": ["not_equivalent", "equivalent"], "qqp": ["not_duplicate", "duplicate"],
                   "mnli": ["entailment", "neutral", "contradiction"], "ax": ["entailment", "neutral", "contradiction"],
                   "qnli": ["entailment", "not_entailment"], "rte": ["entailment", "not_entailment"],
                   "wnli": ["not_entailment", "entailment"]}
HUB_CONFIG = {"CoLA": "cola", "SST-2": "sst2", "MRPC": "mrpc", "QQP": "qqp", "STS-B": "stsb", "MNLI": "mnli",
              "QNLI": "qnli", "RTE": "rte", "WNLI": "wnli"}
PAIR_TASKS = ("MRPC", "QQP", "STS-B", "MNLI", "QNLI", "RTE", "WNLI")
GLUE_WORDS = SPECIALS + POSITIVE + NEGATIVE + FILLER


def glue_rows(n_train=24, n_dev=12, n_test=10, n_ax=7):
    """{task: {split: [{'index', 'a', 'b', 'label'}]}}; test splits have label None. MNLI has
    dev_matched/dev_mismatched and test_matched/test_mismatched; 'AX' is GLUE's diagnostic set."""
    rng = random.Random(1)
    out = {}
    for task, labels in TSV_LABELS.items():
        dev = ("dev_matched", "dev_mismatched") if task == "MNLI" else ("dev",)
        test = ("test_matched", "test_mismatched") if task == "MNLI" else ("test",)
        splits = {"train": n_train, **{s: n_dev for s in dev}, **{s: n_test for s in test}}
        out[task] = {}
        for split, n in splits.items():
            rows = []
            for i in range(n):
                y = i % 2
                label = None if split.startswith("test") else (
                    f"{rng.uniform(0, 5):.3f}" if labels is None else labels[i % len(labels)])
                rows.append({"index": str(i), "a": keyword_sentence(rng, y),
                             "b": keyword_sentence(rng, 1 - y) if task in PAIR_TASKS else None, "label": label})
            out[task][split] = rows
    out["AX"] = {"test": [{"index": str(i), "a": keyword_sentence(rng, i % 2), "b": keyword_sentence(rng, 0),
                           "label": None} for i in range(n_ax)]}
    return out


def _tsv(path, header, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        if header:
            fh.write("\t".join(header) + "\n")
        for line in lines:
            fh.write("\t".join(line) + "\n")


def write_glue_tsv(root, rows):
    """download_glue_data.py's layout and formats: root/<TASK>/{train,dev,test}.tsv, root/diagnostic/."""
    for task, splits in rows.items():
        if task == "AX":
            _tsv(os.path.join(root, "diagnostic", "diagnostic.tsv"), ["index", "sentence1", "sentence2"],
                 [[r["index"], r["a"], r["b"]] for r in splits["test"]])
            continue
        for split, rs in splits.items():
            path = os.path.join(root, task, f"{split}.tsv")
            test = split.startswith("test")
            if task == "CoLA":
                if test:
                    _tsv(path, ["index", "sentence"], [[r["index"], r["a"]] for r in rs])
                else:  # headerless: source, label, original label, sentence
                    _tsv(path, None, [["gj04", r["label"], "" if r["label"] == "1" else "*", r["a"]] for r in rs])
            elif task == "SST-2":
                _tsv(path, ["index", "sentence"] if test else ["sentence", "label"],
                     [[r["index"], r["a"]] if test else [r["a"], r["label"]] for r in rs])
            elif task == "MRPC":
                head = ["#1 ID", "#2 ID", "#1 String", "#2 String"]
                _tsv(path, (["index"] if test else ["Quality"]) + head,
                     [[r["index"] if test else r["label"], "1", "2", r["a"], r["b"]] for r in rs])
            elif task == "QQP":
                _tsv(path, ["id", "question1", "question2"] if test else
                     ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
                     [[r["index"], r["a"], r["b"]] if test else [r["index"], "1", "2", r["a"], r["b"], r["label"]]
                      for r in rs])
            elif task == "STS-B":
                head = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2"]
                _tsv(path, head + ([] if test else ["score"]),
                     [[r["index"], "main", "f", "2012", "0", "s", "s", r["a"], r["b"]] + ([] if test else [r["label"]])
                      for r in rs])
            elif task == "MNLI":
                head = ["index", "promptID", "pairID", "genre", "sentence1", "sentence2"]
                _tsv(path, head + ([] if test else ["label1", "gold_label"]),
                     [[r["index"], "1", "1a", "fiction", r["a"], r["b"]] + ([] if test else [r["label"], r["label"]])
                      for r in rs])
            else:  # QNLI, RTE, WNLI
                a, b = ("question", "sentence") if task == "QNLI" else ("sentence1", "sentence2")
                _tsv(path, ["index", a, b] + ([] if test else ["label"]),
                     [[r["index"], r["a"], r["b"]] + ([] if test else [r["label"]]) for r in rs])
    return str(root)


HUB_TEXT = {"cola": ("sentence", None), "sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"),
            "qqp": ("question1", "question2"), "stsb": ("sentence1", "sentence2"), "mnli": ("premise", "hypothesis"),
            "qnli": ("question", "sentence"), "rte": ("sentence1", "sentence2"), "wnli": ("sentence1", "sentence2"),
            "ax": ("premise", "hypothesis")}
HUB_SPLIT = {"dev": "validation", "dev_matched": "validation_matched", "dev_mismatched": "validation_mismatched"}


def write_hub_copy(root, rows, fmt="save_to_disk"):
    """The same examples in the hub's `glue` schema (nyu-mll/glue): hub column names, integer
    ClassLabel labels in the hub's class order (-1 on test rows), an `idx` column; root/<config>/
    as save_to_disk folders or as the hub repo's <split>-00000-of-00001.parquet files."""
    import datasets
    datasets.disable_progress_bars()
    for task, splits in rows.items():
        config = "ax" if task == "AX" else HUB_CONFIG[task]
        a_col, b_col = HUB_TEXT[config]
        names = HUB_CLASS_NAMES.get(config)
        features = {a_col: datasets.Value("string")}
        if b_col:
            features[b_col] = datasets.Value("string")
        features["label"] = datasets.ClassLabel(names=names) if names else datasets.Value("float32")
        features["idx"] = datasets.Value("int32")
        parts = {}
        for split, rs in splits.items():
            def hub_label(r):
                if r["label"] is None:
                    return -1 if names else -1.0
                if not names:
                    return float(r["label"])
                if TSV_LABELS.get(task) == ("0", "1"):
                    return int(r["label"])
                return names.index(r["label"])
            data = {a_col: [r["a"] for r in rs], "label": [hub_label(r) for r in rs],
                    "idx": [int(r["index"]) for r in rs]}
            if b_col:
                data[b_col] = [r["b"] for r in rs]
            parts[HUB_SPLIT.get(split, split)] = datasets.Dataset.from_dict(data, features=datasets.Features(features))
        folder = os.path.join(root, config)
        if fmt == "save_to_disk":
            datasets.DatasetDict(parts).save_to_disk(folder)
        else:
            os.makedirs(folder, exist_ok=True)
            for split, ds in parts.items():
                ds.to_parquet(os.path.join(folder, f"{split}-00000-of-00001.parquet"))
    return str(root)

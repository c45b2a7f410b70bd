"""Tokenizers: trained WordPiece, vocab.txt, tokenizer dirs, hub names (offline)."""
from __future__ import annotations

import pytest
from transformers import AutoTokenizer
from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

from hpc_bert.data import tokenizer as tk
from hpc_bert.testing.synthetic import synthetic_corpus
from hpc_bert.errors import UserError

TEXT = "The River Council met in 1790! Philosophy, anarchism and the harbour: naïve Café items?"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tok = tk.train_wordpiece(synthetic_corpus(40, seed=5), vocab_size=600)
    folder = tmp_path_factory.mktemp("tok")
    tk.save_tokenizer(tok, str(folder))
    return tok, folder


def test_trained_vocab_uses_bert_special_ids(trained):
    tok, _ = trained
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id) == \
        (0, 100, 101, 102, 103)
    assert tok.is_fast and 300 < len(tok) <= 600
    ids = tok("the river")["input_ids"]
    assert ids[0] == 101 and ids[-1] == 102 and 100 not in ids


def test_vocab_file_gives_full_fast_tokenizer_matching_reference(trained):
    tok, folder = trained
    vocab_file = folder / "vocab.txt"
    lines = vocab_file.read_text(encoding="utf-8").splitlines()
    loaded = tk.load_tokenizer(str(vocab_file))
    assert loaded.is_fast and len(loaded) == len(lines) == len(tok)
    # the pure-Python reference BERT tokenizer agrees token for token
    reference = BertTokenizerLegacy(vocab_file=str(vocab_file))
    assert loaded(TEXT)["input_ids"] == reference(TEXT)["input_ids"]
    pair = loaded("the river", "council")
    assert pair["input_ids"] == reference("the river", "council")["input_ids"]
    assert pair["token_type_ids"] == [0, 0, 0, 0, 1, 1]


def test_dir_and_save_pretrained_round_trip(trained, tmp_path):
    tok, folder = trained
    from_dir = tk.load_tokenizer(str(folder))
    assert from_dir(TEXT)["input_ids"] == tok(TEXT)["input_ids"]
    from_dir.save_pretrained(tmp_path / "again")
    again = AutoTokenizer.from_pretrained(tmp_path / "again")
    assert again(TEXT)["input_ids"] == tok(TEXT)["input_ids"] and len(again) == len(tok)
    # a dir holding only vocab.txt works too
    (tmp_path / "vocab_only").mkdir()
    (tmp_path / "vocab_only" / "vocab.txt").write_text((folder / "vocab.txt").read_text(encoding="utf-8"),
                                                       encoding="utf-8")
    assert tk.load_tokenizer(str(tmp_path / "vocab_only"))(TEXT)["input_ids"] == tok(TEXT)["input_ids"]


def test_padding_and_truncation_of_a_saved_tokenizer_json_are_ignored(trained, tmp_path):
    tok, _ = trained
    tok.backend_tokenizer.enable_truncation(8)
    tok.backend_tokenizer.enable_padding(length=16)
    tok.save_pretrained(tmp_path)
    tok.backend_tokenizer.no_truncation()
    tok.backend_tokenizer.no_padding()
    loaded = tk.load_tokenizer(str(tmp_path))
    assert len(loaded(TEXT * 3)["input_ids"]) > 16


def test_cased_vocab_is_detected(tmp_path):
    words = ["Paris", "London", "Alice", "Bob", "the", "a"]
    (tmp_path / "vocab.txt").write_text("\n".join(tk.BERT_SPECIAL_LAYOUT + words) + "\n")
    tok = tk.load_tokenizer(str(tmp_path / "vocab.txt"))
    assert tok.convert_ids_to_tokens(tok("Paris the")["input_ids"]) == ["[CLS]", "Paris", "the", "[SEP]"]


def test_hub_name_offline_is_one_clear_line(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: refused at once
    with pytest.raises(UserError, match="not reachable: pass a vocab.txt or tokenizer dir") as e:
        tk.load_tokenizer("surely-not-cached/bert-xyz")
    assert "\n" not in str(e.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="HF_HUB_OFFLINE is set: pass a vocab.txt"):
        tk.load_tokenizer("surely-not-cached/bert-xyz")


@pytest.mark.parametrize("content, message", [
    ("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\nthe\n", "lists 'the' twice"),
    ("[PAD]\n[UNK]\nthe\n", r"lacks \[CLS\], \[SEP\], \[MASK\]"),
])
def test_bad_vocab_files(tmp_path, content, message):
    (tmp_path / "vocab.txt").write_text(content)
    with pytest.raises(UserError, match=message):
        tk.load_tokenizer(str(tmp_path / "vocab.txt"))


def test_bad_tokenizer_paths(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        tk.load_tokenizer(str(tmp_path / "missing" / "vocab.txt"))
    with pytest.raises(UserError, match="neither tokenizer.json nor vocab.txt"):
        tk.load_tokenizer(str(tmp_path))
    with pytest.raises(UserError, match="too small"):
        tk.train_wordpiece(["a b c"], vocab_size=120)

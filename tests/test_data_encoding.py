"""The word-by-word encoder gives the Rust tokenizer's ids, on every kind of text and tokenizer."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from hpc_bert.data.encoding import SentenceEncoder, word_by_word
from hpc_bert.data.tokenizer import load_tokenizer, save_tokenizer, train_wordpiece
from hpc_bert.testing.synthetic import synthetic_corpus, with_long_tail

# what BERT's normaliser and pre-tokenizer treat specially, next to the cut points (space, ASCII punctuation)
TRICKY = [["First Sentence HERE.", "And a second one!"], ["Only one."],
          ["Ünïcode café 1790.", "x", "Plain again (ASCII) [SEP] split.", "tab\there\x07bell", "中文 text"],
          ["A\u00a0non-breaking space.", "ÀÉÎ upper accents.", "[mask] is not [MASK], [Sep]"],
          ["don'\u0301t (\u0301x) a\u037eb \u201cquoted\u201d \u2014 dash\u2026", "nul\x00byte \ufffd replacement"],
          [], ["x" * 150 + " long-word", "ΣΊΣΥΦΟΣ Straße İstanbul ǅ", "[SEP]", "[SEP] at start", "at end [SEP]"],
          ["emoji 🙂🙂 and 1,000.5%", "a" * 60 + "!" + "b" * 60]]


@pytest.fixture(scope="module")
def docs():
    return [synthetic_corpus(40, seed=3)[i].split(". ") for i in range(40)] + TRICKY


@pytest.fixture(scope="module")
def trained_vocab(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    save_tokenizer(train_wordpiece(synthetic_corpus(60, seed=11) + ["café Straße ΣΊΣΥΦΟΣ 中文"], vocab_size=500),
                   str(root))
    return str(root / "vocab.txt")


def rust_reference(tok, docs):
    """Per sentence, the ids of each part between literal [SEP]s (a [SEP] ends a sentence); an
    empty document is one empty slice."""
    return [tok(part, add_special_tokens=False)["input_ids"]
            for d in docs for s in (d or [""]) for part in s.split("[SEP]")]


def sentences_of(flat, bounds):
    return [flat[a:b].tolist() for doc in bounds for a, b in zip(doc[:-1], doc[1:])]


@pytest.mark.parametrize("lowercase", [True, False])
@pytest.mark.parametrize("cache_limit", [1 << 18, 3])
def test_cached_encoding_equals_the_rust_tokenizer(trained_vocab, docs, lowercase, cache_limit):
    tok = load_tokenizer(trained_vocab, lowercase=lowercase)
    encoder = SentenceEncoder(tok.backend_tokenizer.to_str(), tok.sep_token_id, cache_limit=cache_limit)
    assert encoder.pieces is not None  # BERT's kind: the cached path
    flat, bounds = encoder.encode(docs)
    assert flat.dtype == np.int32 and (flat >= 0).all()
    assert sentences_of(flat, bounds) == rust_reference(tok, docs)
    empty = bounds[docs.index([])]
    assert len(bounds) == len(docs) and len(empty) == 2 and empty[0] == empty[1]
    assert all(doc[0] == prev[-1] for prev, doc in zip(bounds, bounds[1:]))  # contiguous
    assert len(encoder.pieces) <= max(cache_limit, 2 + 1)
    again, _ = encoder.encode(docs)  # a warm cache gives the same ids
    assert np.array_equal(again, flat)


def test_a_vocabulary_that_knows_the_tricky_words(docs, tmp_path):
    """Trained on the test texts themselves: their accents, CJK and symbols get real ids, not [UNK]."""
    tok = load_tokenizer(save_tokenizer(train_wordpiece([" ".join(s for d in docs for s in d)] * 3, vocab_size=2000),
                                        str(tmp_path)))
    encoder = SentenceEncoder(tok.backend_tokenizer.to_str(), tok.sep_token_id)
    assert sentences_of(*encoder.encode(docs)) == rust_reference(tok, docs)


def test_line_breaks_inside_sentences_take_the_rust_path(trained_vocab):
    tok = load_tokenizer(trained_vocab)
    encoder = SentenceEncoder(tok.backend_tokenizer.to_str(), tok.sep_token_id)
    docs = [["two\nlines here.", "carriage\rreturn"], ["plain"]]
    assert sentences_of(*encoder.encode(docs)) == rust_reference(tok, docs)


def test_other_tokenizer_kinds_are_encoded_sentence_by_sentence(tmp_path, docs):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(synthetic_corpus(30, seed=5), trainers.BpeTrainer(
        vocab_size=400, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]",
                                  cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    json_text = tok.backend_tokenizer.to_str()
    assert not word_by_word(json.loads(json_text))
    encoder = SentenceEncoder(json_text, tok.sep_token_id)
    assert encoder.pieces is None
    assert sentences_of(*encoder.encode(docs)) == rust_reference(tok, docs)


@pytest.mark.parametrize("lowercase", [True, False])
def test_a_long_tail_of_rare_words_over_many_chunks_and_cache_resets(trained_vocab, lowercase):
    """One word in three a made-up name, a number or a typo, mixed case and very long words, some
    Unicode: each chunk's misses are encoded in one call, a small cache starts afresh many times,
    and every chunk still gets the Rust tokenizer's ids (the marker pieces survive each reset)."""
    rng = random.Random(7)
    tok = load_tokenizer(trained_vocab, lowercase=lowercase)
    encoder = SentenceEncoder(tok.backend_tokenizer.to_str(), tok.sep_token_id, cache_limit=64)
    lines = [with_long_tail(doc, rng, every=3) for doc in synthetic_corpus(60, seed=9)]
    lines += ["MiXeD CaSe " + "Zq" * 70 + " 00123 ÉTÉ naïve x9y8", "Ünïcode Drabez 中文 Drabez"]
    for start in range(0, len(lines), 7):  # chunks of documents, as sample generation encodes them
        chunk = [line.split(". ") for line in lines[start:start + 7]] + [[]]  # an empty document too
        assert sentences_of(*encoder.encode(chunk)) == rust_reference(tok, chunk)
        assert len(encoder.pieces) <= 64

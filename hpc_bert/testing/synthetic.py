"""Small deterministic corpora and sample shards for tests, benchmarks and dry runs.

The corpus is English-like (sentences drawn from a fixed word list), so a WordPiece vocab
trained on it is meaningful; the shards are random ids in our or ABB's HDF5 layout.
"""
from __future__ import annotations

import random

import h5py
import numpy as np

_WORDS = """the of and to in a is that for it as was with be by on not he this are or his from at which
but have an they you were her she there been one all we their has would when if so no will can more
about its them time only new some could these two may first then do any like my now over such our man
me even most made after also did many before must through back years where much your way well down
should because each just those people how too little state good very make world still own see men
work long get here between both life being under never day same another know while last might us
great old year off come since against go came right used take three states himself few house use
during without again place american around however home small found thought went say part once
general high upon school every country government system number water money morning history
philosophy anarchism river mountain library council question president congress treaty harbour
""".split()


def synthetic_corpus(num_docs: int = 40, seed: int = 0, min_sentences: int = 3, max_sentences: int = 30) -> list[str]:
    """``num_docs`` documents (one string each) of random English-like sentences."""
    rng = random.Random(seed)
    docs = []
    for _ in range(num_docs):
        sentences = []
        for _ in range(rng.randint(min_sentences, max_sentences)):
            words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 24))]
            if rng.random() < 0.2:
                words.insert(rng.randrange(len(words)), f"{rng.randint(1, 2000)}")
            sentences.append(" ".join(words).capitalize() + rng.choice([".", ".", ".", "!", "?"]))
        docs.append(" ".join(sentences))
    return docs


_SYLLABLES = "ka lo vi dra shen mir tov ul bez quor yan pel ix nos gar thu wen zo".split()


def rare_word(rng: random.Random, word: str) -> str:
    """What makes a real corpus's long tail: a made-up name, a number, or a typo of ``word``."""
    draw = rng.random()
    if draw < 0.35:
        return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4))).capitalize()
    if draw < 0.6:
        return str(rng.randint(0, 10 ** rng.randint(2, 7)))
    if len(word) > 3:  # two neighbouring letters swapped, or one doubled
        i = rng.randrange(len(word) - 1)
        return word[:i] + word[i + 1] + word[i] + word[i + 2:] if rng.random() < 0.5 else word[:i + 1] + word[i:]
    return "".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(rng.randint(5, 9)))


def with_long_tail(line: str, rng: random.Random, every: int = 7) -> str:
    """``line`` with one word in ``every`` replaced by a rare one (names, numbers, typos)."""
    words = line.split(" ")
    for i in range(rng.randrange(every), len(words), every):
        words[i] = rare_word(rng, words[i])
    return " ".join(words)


def write_random_shard(path: str, num_samples: int, seq_len: int = 16, vocab_size: int = 1000,
                       max_predictions: int = 3, seed: int = 0, abb: bool = False) -> None:
    """A sample shard of random ids. ``abb``: ABB's int32/int8 gzip layout, no attributes;
    otherwise ours (uint16/uint8, uncompressed, with attributes). Row i's first token after
    [CLS] is ``1000 + i % 1000`` when the vocab allows, so tests can tell rows apart."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000 if vocab_size > 2000 else 104, vocab_size, size=(num_samples, seq_len))
    lengths = rng.integers(4, seq_len - 1, size=num_samples) if seq_len > 5 else np.full(num_samples, seq_len - 2)
    col = np.arange(seq_len)[None, :]
    mask = col < (lengths + 2)[:, None]
    ids = np.where(mask, ids, 0)
    ids[:, 0] = 101
    ids[np.arange(num_samples), lengths + 1] = 102
    if vocab_size > 2000:
        ids[:, 1] = 1000 + np.arange(num_samples) % 1000
    # up to max_predictions distinct positions among the text tokens, ascending, 0-padded
    text = (col >= 1) & (col <= lengths[:, None])
    keys = np.where(text, rng.random((num_samples, seq_len)), 2.0)
    picked = np.argsort(keys, axis=1)[:, :max_predictions]
    used = np.arange(max_predictions)[None, :] < np.minimum(max_predictions, lengths)[:, None]
    positions = np.sort(np.where(used, picked, seq_len), axis=1)
    used = positions < seq_len
    positions = np.where(used, positions, 0)
    rows = np.broadcast_to(np.arange(num_samples)[:, None], positions.shape)
    labels = np.where(used, ids[rows, positions], 0)
    ids[rows[used], positions[used]] = 103
    id_type, small, opts = (np.int32, np.int8, {"compression": "gzip"}) if abb else (np.uint16, np.uint8, {})
    with h5py.File(path, "w") as f:
        f.create_dataset("input_ids", data=ids.astype(id_type), **opts)
        f.create_dataset("input_mask", data=mask.astype(small), **opts)
        f.create_dataset("segment_ids", data=np.zeros_like(ids, dtype=small), **opts)
        f.create_dataset("masked_lm_positions", data=positions.astype(id_type), **opts)
        f.create_dataset("masked_lm_ids", data=labels.astype(id_type), **opts)
        f.create_dataset("next_sentence_labels", data=np.zeros(num_samples, small), **opts)
        if not abb:
            f.attrs.update({"max_seq_length": seq_len, "vocab_size": vocab_size,
                            "max_predictions_per_seq": max_predictions,
                            "max_token_id": int(max(ids.max(initial=0), labels.max(initial=0)))})

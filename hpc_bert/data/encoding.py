"""Sentences -> token ids for sample generation: the Rust tokenizer's ids, a word at a time.

Encoding is most of the cost of preparing data, and most of the Rust tokenizer's cost is
per token bookkeeping (offsets, strings, Encoding objects) that sample generation throws
away. BERT's pipeline works word by word: normalise, split at whitespace and punctuation,
then WordPiece each word on its own. So the text is cut at the points where BERT *always*
splits (an ASCII space, an ASCII punctuation mark), each piece is encoded once by the Rust
tokenizer itself and cached, and a chunk becomes one regex pass plus dict lookups (about 3x
faster). The ids are the Rust tokenizer's by construction: a piece is encoded exactly as
it would be inside its sentence, because BERT's normaliser changes neither of the cut
characters and never merges text across them (it works character by character; NFD
reorders only combining marks). Whatever else a piece holds (accents, CJK, control
characters, other Unicode punctuation) the Rust call handles as it would in the sentence.

Sentences containing an added token's text ([SEP], [MASK], ...) go to the Rust tokenizer
whole, since it matches those before normalising; a literal [SEP] there ends a sentence, as
everywhere in sample generation. Tokenizers of other kinds (byte-level BPE, ...) are encoded
sentence by sentence through Rust: ``SentenceEncoder`` picks the path from the tokenizer's
own description.
"""
from __future__ import annotations

import itertools
import json
import operator
import re

import numpy as np

_SENTENCE_END, _DOC_END = -1, -2  # markers in the id stream: ids are >= 0
_ASCII_PUNCT = "".join(chr(c) for c in range(33, 127) if not chr(c).isalnum())
# A chunk is written as: each sentence followed by "\n", each document by "\r" (text shards are
# read line by line in universal-newline mode, so neither occurs inside a sentence).
_PIECE = re.compile(r"[^ \n\r%s]+|[\n\r%s]" % ((re.escape(_ASCII_PUNCT),) * 2))
CACHE_LIMIT = 1 << 18  # distinct pieces kept per process, then the cache starts afresh
_RUST_BATCH = 512  # sentences per encode call on the Rust path: bounds memory of Encoding objects


class _PieceIds(dict):
    """piece -> its code; the ids of code ``c`` are ``tokens[starts[c]:starts[c] + lengths[c]]``.

    ``ids(pieces)`` looks every piece up in one pass (a miss gets the next code and waits), encodes
    the chunk's misses in one Rust call, then gathers the chunk's ids with numpy: no Python work per
    token. On text with a long tail of rare words (names, numbers, typos) the misses are most of
    the cost, so they skip what does not change them: a miss of ASCII letters and digits alone
    (nearly all of them) goes straight to WordPiece, lowercased if BERT's normaliser lowercases,
    at half the cost of the full pipeline. Past ``limit`` pieces the cache starts afresh (memory
    stays bounded; hot pieces come back in the next chunk's one call)."""

    def __init__(self, backend, wordpiece, lowercase: bool, limit: int):
        super().__init__()
        self.backend, self.wordpiece, self.lowercase, self.limit = backend, wordpiece, lowercase, limit
        self._reset()

    def _reset(self) -> None:
        self.clear()
        self.update({"\n": 0, "\r": 1})  # the markers: never encoded, they are not text
        self.tokens = np.array([_SENTENCE_END, _DOC_END], np.int32)
        self.starts, self.lengths = np.array([0, 1]), np.array([1, 1])
        self.pending: list[str] = []

    def __missing__(self, piece: str) -> int:
        self[piece] = code = len(self)
        self.pending.append(piece)
        return code

    def ids(self, pieces: list[str]) -> np.ndarray:
        """The ids of ``pieces``, one after the other."""
        codes = np.fromiter(map(self.__getitem__, pieces), dtype=np.int64, count=len(pieces))
        if self.pending:
            self._encode_pending()
        starts, lengths = self.starts[codes], self.lengths[codes]
        ends = np.cumsum(lengths)
        out = self.tokens[np.repeat(starts - ends + lengths, lengths) + np.arange(ends[-1] if len(ends) else 0)]
        if len(self) > self.limit:
            self._reset()
        return out

    def _encode_pending(self) -> None:
        pending, first = self.pending, len(self) - len(self.pending)  # codes are given in order
        self.pending = []
        plain = list(map(operator.and_, map(str.isascii, pending), map(str.isalnum, pending)))
        other = list(map(operator.not_, plain))
        self.starts, self.lengths = np.resize(self.starts, len(self)), np.resize(self.lengths, len(self))
        for tokenizer, chosen in ((self.wordpiece, plain), (self.backend, other)):
            pieces = list(itertools.compress(pending, chosen))
            if not pieces:
                continue
            words = [p.lower() for p in pieces] if self.lowercase and tokenizer is self.wordpiece else pieces
            encoding = tokenizer.encode(words, is_pretokenized=True, add_special_tokens=False)
            lengths = np.bincount(np.asarray(encoding.word_ids, dtype=np.int64), minlength=len(pieces))
            codes = first + np.flatnonzero(chosen)
            self.starts[codes] = len(self.tokens) + np.cumsum(lengths) - lengths
            self.lengths[codes] = lengths
            self.tokens = np.concatenate([self.tokens, np.asarray(encoding.ids, dtype=np.int32)])


def word_by_word(spec: dict) -> bool:
    """True when the tokenizer (its parsed JSON) is BERT's kind: BERT normaliser (or none), BERT
    pre-tokenizer, WordPiece."""
    normalizer = (spec.get("normalizer") or {}).get("type", "BertNormalizer")
    return (normalizer == "BertNormalizer" and (spec.get("pre_tokenizer") or {}).get("type") == "BertPreTokenizer"
            and (spec.get("model") or {}).get("type") == "WordPiece")


class SentenceEncoder:
    """``encode(docs)``: a chunk's documents (lists of sentences) -> flat ids + sentence bounds."""

    def __init__(self, backend_json: str, sep_id: int, cache_limit: int = CACHE_LIMIT):
        from tokenizers import Tokenizer

        self.backend, self.sep_id = Tokenizer.from_str(backend_json), sep_id
        spec = json.loads(backend_json)
        added = sorted((t["content"] for t in spec.get("added_tokens", [])), key=len, reverse=True)
        self.added = re.compile("|".join(map(re.escape, added)), re.IGNORECASE) if added else None
        self.pieces = None
        if word_by_word(spec):
            wordpiece = {**spec, "normalizer": None, "pre_tokenizer": {"type": "WhitespaceSplit"},
                         "post_processor": None, "added_tokens": []}  # a piece never holds an added token's text
            normalizer = spec.get("normalizer")
            lowercase = bool(normalizer and normalizer.get("lowercase", True))  # BertNormalizer's default
            self.pieces = _PieceIds(self.backend, Tokenizer.from_str(json.dumps(wordpiece)), lowercase, cache_limit)

    def encode(self, docs: list[list[str]]) -> tuple[np.ndarray, list[list[int]]]:
        """Flat token array of the chunk plus, per document, its sentence boundary offsets
        (sentences of a document are contiguous, so a packed sequence is one slice)."""
        stream = self._cached(docs) if self.pieces is not None else self._rust(docs)
        markers = np.flatnonzero(stream < 0)
        offsets = (markers - np.arange(len(markers))).tolist()  # token offset at each marker
        bounds, current = [], [0]
        for kind, offset in zip(stream[markers].tolist(), offsets):
            if kind == _SENTENCE_END:
                current.append(offset)
            else:
                if len(current) == 1:  # a document without sentences is one empty slice
                    current.append(offset)
                bounds.append(current)
                current = [offset]
        return stream[stream >= 0], bounds

    def _cached(self, docs: list[list[str]]) -> np.ndarray:
        text = "".join("\n".join(doc) + "\n\r" if doc else "\r" for doc in docs)
        if text.count("\n") != sum(map(len, docs)) or text.count("\r") != len(docs):
            return self._rust(docs)  # a line break inside a sentence: not from a text shard
        parts, done = [], 0
        for match in self.added.finditer(text) if self.added else ():  # rare: literal [SEP], [MASK], ...
            start = max(text.rfind("\n", 0, match.start()), text.rfind("\r", 0, match.start())) + 1
            if start < done:
                continue  # a second one in the same sentence
            end = text.index("\n", match.start())
            parts += [self._lookup(text[done:start]), self._sentence_ids(text[start:end])]
            done = end
        parts.append(self._lookup(text[done:]))
        return np.concatenate(parts)

    def _lookup(self, text: str) -> np.ndarray:
        return self.pieces.ids(_PIECE.findall(text))

    def _marked(self, ids: list[int]) -> np.ndarray:
        """Rust ids of one sentence, a [SEP] in it a sentence end."""
        out = np.asarray(ids, dtype=np.int32)
        out[out == self.sep_id] = _SENTENCE_END
        return out

    def _sentence_ids(self, sentence: str) -> np.ndarray:
        return self._marked(self.backend.encode(sentence, add_special_tokens=False).ids)

    def _rust(self, docs: list[list[str]]) -> np.ndarray:
        """Every sentence through the Rust tokenizer, in batches."""
        sentences = [s for doc in docs for s in doc]
        encoded = []
        for i in range(0, len(sentences), _RUST_BATCH):
            encoded += self.backend.encode_batch_fast(sentences[i:i + _RUST_BATCH], add_special_tokens=False)
        sentence_end, doc_end = np.array([_SENTENCE_END], np.int32), np.array([_DOC_END], np.int32)
        parts, k = [], 0
        for doc in docs:
            for encoding in encoded[k:k + len(doc)]:
                parts += [self._marked(encoding.ids), sentence_end]
            parts.append(doc_end)
            k += len(doc)
        return np.concatenate(parts) if parts else np.zeros(0, np.int32)

"""Token ids -> packed, masked rows: the pure array steps of sample generation.

Packing, two ways (``--packing``):
- ``full_sentences`` (default; RoBERTa's FULL-SENTENCES): the shard is one stream of tokens,
  documents joined by ``[SEP]``, cut into rows of exactly ``max_seq_length - 2`` tokens, so every
  row but the shard's last is full (< 1% padding). Consecutive sentences fill a row; the one
  that crosses its end continues at the start of the next row, which is what keeps the rows
  full (RoBERTa, which never splits a sentence, still pads ~10% at 128 tokens).
  ``short_seq_prob`` does not apply.
- ``doc_sentences`` (BERT/ABB's single-segment variant): a row never crosses a document. With
  probability ``short_seq_prob`` a row aims at a random length in [2, max] instead of max;
  whole sentences are added until the target is reached or the next one would not fit; a
  sentence longer than a row is cut, and its rest starts the next row (no text is dropped).
Masking is BERT's static 80/10/10 rule, vectorised over rows.
"""
from __future__ import annotations

import dataclasses
import random

import numpy as np

from hpc_bert.data.config import SampleConfig

@dataclasses.dataclass(frozen=True)
class SpecialIds:
    pad: int
    cls: int
    sep: int
    mask: int
    vocab_size: int

    @classmethod
    def of(cls, tok) -> "SpecialIds":
        return cls(pad=tok.pad_token_id, cls=tok.cls_token_id, sep=tok.sep_token_id,
                   mask=tok.mask_token_id, vocab_size=len(tok))


def pack_document(bounds: list[int], max_tokens: int, short_seq_prob: float,
                  rng: random.Random, out: list[tuple[int, int]]) -> None:
    """Append (start, end) token slices of packed sequences for one document to ``out``."""
    def draw() -> int:
        return rng.randint(2, max_tokens) if rng.random() < short_seq_prob else max_tokens

    start, target = bounds[0], draw()
    for s, e in zip(bounds[:-1], bounds[1:]):
        if e - start > max_tokens and s > start:  # the next sentence does not fit: close
            out.append((start, s))
            start, target = s, draw()
        while e - start > max_tokens:  # one sentence longer than a sequence: cut it
            out.append((start, start + max_tokens))
            start, target = start + max_tokens, draw()
        if e - start >= target:
            out.append((start, e))
            start, target = e, draw()
    if bounds[-1] > start:
        out.append((start, bounds[-1]))


class FullSentencePacker:
    """Rows of exactly ``max_tokens`` from a stream of documents fed chunk by chunk; the tokens
    that do not fill a row wait (``carry``) for the next chunk, so chunking changes nothing."""

    def __init__(self, max_tokens: int, sep_id: int):
        self.max_tokens, self.sep_id = max_tokens, sep_id
        self.carry = np.zeros(0, np.int32)

    def add(self, flat: np.ndarray, doc_bounds: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """(token stream, [N, 2] row slices of it) for the full rows this chunk completes."""
        ends = [b[-1] for b in doc_bounds if b[-1] > b[0]]
        stream = np.concatenate([self.carry, np.insert(flat, ends, self.sep_id).astype(np.int32)])
        full = len(stream) // self.max_tokens
        self.carry = stream[full * self.max_tokens:]
        starts = np.arange(full, dtype=np.int64) * self.max_tokens
        return stream, np.stack([starts, starts + self.max_tokens], axis=1)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """The last, partial row (without the [SEP] that would follow the last document)."""
        stream = self.carry[:-1] if len(self.carry) and self.carry[-1] == self.sep_id else self.carry
        self.carry = np.zeros(0, np.int32)
        slices = np.array([[0, len(stream)]] if len(stream) else np.zeros((0, 2)), dtype=np.int64)
        return stream, slices


def build_rows(flat: np.ndarray, slices: np.ndarray, seq_len: int, ids: SpecialIds) -> tuple[np.ndarray, np.ndarray]:
    """[CLS] tokens [SEP] padded rows [N, L] (int32) and their content lengths."""
    starts, ends = slices[:, 0], slices[:, 1]
    lengths = ends - starts
    col = np.arange(seq_len)[None, :]
    content = (col >= 1) & (col <= lengths[:, None])
    src = np.clip(starts[:, None] + col - 1, 0, max(len(flat) - 1, 0))
    rows = np.where(content, flat[src] if len(flat) else 0, ids.pad).astype(np.int32)
    rows[:, 0] = ids.cls
    rows[np.arange(len(rows)), lengths + 1] = ids.sep
    return rows, lengths


def mask_rows(rows: np.ndarray, lengths: np.ndarray, cfg: SampleConfig, ids: SpecialIds,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Static masking: (masked input_ids, masked_lm_positions, masked_lm_ids), 0-padded.

    As in BERT: round(masked_lm_prob x tokens incl. [CLS]/[SEP]) positions per row (at
    least 1, at most max_predictions_per_seq), chosen uniformly among the content tokens;
    80% become [MASK], 10% a random token, 10% stay.
    """
    n, seq_len = rows.shape
    preds = cfg.max_predictions_per_seq
    col = np.arange(seq_len)[None, :]
    content = (col >= 1) & (col <= lengths[:, None])
    # a [SEP] between two documents (full_sentences) is structure, not text: never masked
    candidate = content & (rows != ids.sep)
    keys = np.where(candidate, rng.random((n, seq_len)), 2.0)
    # the `preds` smallest keys per row in increasing order: a uniform random choice of
    # positions (preds <= seq_len - 2, checked by SampleConfig)
    smallest = np.argpartition(keys, preds - 1, axis=1)[:, :preds]
    chosen = np.take_along_axis(smallest, np.argsort(np.take_along_axis(keys, smallest, axis=1), axis=1), axis=1)
    count = np.minimum(np.maximum(1, np.rint((lengths + 2) * cfg.masked_lm_prob)), preds).astype(np.int64)
    count = np.minimum(count, candidate.sum(axis=1))
    used = np.arange(preds)[None, :] < count[:, None]
    positions = np.sort(np.where(used, chosen, seq_len), axis=1)
    used = positions < seq_len
    positions = np.where(used, positions, 0)
    row_idx = np.broadcast_to(np.arange(n)[:, None], positions.shape)
    labels = np.where(used, rows[row_idx, positions], 0)
    draw = rng.random((n, preds))
    random_ids = rng.integers(0, ids.vocab_size, size=(n, preds))
    replacement = np.where(draw < 0.8, ids.mask, np.where(draw < 0.9, labels, random_ids))
    masked = rows.copy()
    masked[row_idx[used], positions[used]] = replacement[used]
    return masked, positions.astype(np.int32), labels.astype(np.int32)

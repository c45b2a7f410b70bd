"""Per-document attention in packed rows: the block-diagonal mask and the restarting positions.

A ``full_sentences`` row is ``[CLS] doc-a [SEP] doc-b [SEP] doc-c... [SEP] pad...``: the
documents of the stream joined by ``[SEP]``. The boundaries are read from the row itself —
a ``[SEP]`` ends the document it follows — so every shard (ours, ABB's) works unchanged. A
``[SEP]`` at a masked position is never a boundary: ``[SEP]`` is never chosen for masking, so a
masked position showing the ``[SEP]`` id is a random replacement of some other token.

Tokens then attend only to keys of their own document, and position ids restart at 0 at each
document's first token, as if the document had been a row of its own. Padding queries look at
the first document (their outputs are never used; a query with no key would give NaN in
SDPA). Everything here is tensor arithmetic on the device: no host sync, static shapes.

Two ways to apply the mask, both from PyTorch: a boolean [B, 1, L, L] mask for SDPA (the
kernel the padding mask already uses), or a FlexAttention ``BlockMask`` (the ``flex`` kernel).
"""
from __future__ import annotations

import torch

ATTENTION_KERNELS = ("sdpa", "flex")


def document_ids(input_ids: torch.Tensor, masked: torch.Tensor | None, attention_mask: torch.Tensor,
                 sep_id: int) -> torch.Tensor:
    """[B, L] int: the index of each token's document within its row (0 for padding).
    ``masked``: [B, L] bool, the positions that carry an MLM label (None: none known)."""
    ends = input_ids == sep_id
    if masked is not None:  # a masked position's own token is its label, never a [SEP]
        ends = ends & ~masked
    ends = ends.to(torch.int32)
    doc = torch.cumsum(ends, dim=1, dtype=torch.int32) - ends  # the [SEP] belongs to the document it ends
    return torch.where(attention_mask.bool(), doc, torch.zeros_like(doc))


def document_positions(doc: torch.Tensor) -> torch.Tensor:
    """[B, L] long: each token's position within its document (0 at the document's first token)."""
    length = doc.shape[1]
    col = torch.arange(length, device=doc.device).expand_as(doc)
    starts = torch.ones_like(doc, dtype=torch.bool)
    starts[:, 1:] = doc[:, 1:] != doc[:, :-1]
    first = torch.cummax(torch.where(starts, col, torch.zeros_like(col)), dim=1).values
    return col - first


def sdpa_mask(doc: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, 1, L, L] bool for SDPA: query and key in the same document, key not padding."""
    same = doc[:, :, None] == doc[:, None, :]
    return (same & attention_mask.bool()[:, None, :])[:, None]


def flex_block_mask(doc: torch.Tensor, attention_mask: torch.Tensor):
    """The same mask as a FlexAttention BlockMask (built on the batch's device)."""
    from torch.nn.attention.flex_attention import create_block_mask  # only the flex kernel needs it
    real = attention_mask.bool()

    def same_document(b, h, q, k):
        return (doc[b, q] == doc[b, k]) & real[b, k]

    batch, length = doc.shape
    return create_block_mask(same_document, batch, None, length, length, device=doc.device)


def mask_and_positions(input_ids, masked, attention_mask, sep_id: int, kernel: str, position_offset: int):
    """(the attention mask for ``kernel``, position ids) of a batch of packed rows.
    ``position_offset``: where the model's position ids start (RoBERTa-style models skip
    the padding index and the slot below it: pad id + 1)."""
    doc = document_ids(input_ids, masked, attention_mask, sep_id)
    positions = document_positions(doc) + position_offset
    mask = flex_block_mask(doc, attention_mask) if kernel == "flex" else sdpa_mask(doc, attention_mask)
    return mask, positions

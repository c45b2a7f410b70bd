"""The BERT MLM, built from config (no hub), with a sparse MLM head.

post-LN -> transformers' ``BertForMaskedLM``; pre-LN -> ``RobertaPreLayerNormForMaskedLM``
(pre-LN BERT: LayerNorm before each sublayer plus a final LayerNorm, which is what lets
the paper's recipe use a 1e-3 peak LR). Both use SDPA attention and save as ordinary HF
dirs that ``AutoModelForSequenceClassification.from_pretrained`` loads.

Sparse prediction: only ~15% of positions carry a label, so the encoder output is gathered
at those positions before the MLM head (a hidden x vocab matmul, the largest in the model
for small widths). The loss is the same mean cross-entropy over masked tokens.

Static gather: when the data bounds the masked positions per sequence (the shards'
``max_predictions_per_seq``), the head always gets ``max_predictions x micro batch`` rows —
the masked positions in order, then padding rows labelled with the ignore index — so shapes
never change from batch to batch (nothing recompiles) and finding the positions needs no
host sync (a boolean index does: its size is data-dependent).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hpc_bert.model.cpu_dropout import use_cpu_dropout
from hpc_bert.model.doc_attention import mask_and_positions

IGNORE_INDEX = -100


def padded_vocab_size(n_tokens: int, multiple: int = 8) -> int:
    """Round the vocab up so the embedding / decoder matmuls use tensor-core friendly shapes."""
    return int(math.ceil(n_tokens / multiple) * multiple)


def hf_config(model_cfg, vocab_size: int, pad_token_id: int = 0):
    common = dict(vocab_size=vocab_size, hidden_size=model_cfg.hidden_size,
                  num_hidden_layers=model_cfg.num_hidden_layers,
                  num_attention_heads=model_cfg.num_attention_heads,
                  intermediate_size=model_cfg.intermediate_size, hidden_act=model_cfg.hidden_act,
                  hidden_dropout_prob=model_cfg.hidden_dropout_prob,
                  attention_probs_dropout_prob=model_cfg.attention_probs_dropout_prob,
                  type_vocab_size=2, pad_token_id=pad_token_id, attn_implementation="sdpa")
    if model_cfg.encoder_ln_mode == "pre-ln":
        from transformers import RobertaPreLayerNormConfig
        # RoBERTa-style position ids start after the padding index: two extra slots.
        return RobertaPreLayerNormConfig(max_position_embeddings=model_cfg.max_position_embeddings + 2,
                                         **common)
    from transformers import BertConfig
    return BertConfig(max_position_embeddings=model_cfg.max_position_embeddings, **common)


def build_hf_model(model_cfg, vocab_size: int, pad_token_id: int = 0) -> nn.Module:
    config = hf_config(model_cfg, vocab_size, pad_token_id)
    if model_cfg.encoder_ln_mode == "pre-ln":
        from transformers import RobertaPreLayerNormForMaskedLM
        return RobertaPreLayerNormForMaskedLM(config)
    from transformers import BertForMaskedLM
    return BertForMaskedLM(config)


def mlm_head(hf_model: nn.Module) -> nn.Module | None:
    """The MLM head of an HF *ForMaskedLM (BERT: ``cls``, RoBERTa: ``lm_head``); None for others.
    It maps hidden vectors of any leading shape to vocabulary logits."""
    for name in ("cls", "lm_head"):
        head = getattr(hf_model, name, None)
        if isinstance(head, nn.Module):
            return head
    return None


def position_offset(hf_model: nn.Module) -> int:
    """The position id of a row's first token: 0 for BERT; RoBERTa-style models start after
    the padding index (pad id + 1)."""
    embeddings = getattr(hf_model, hf_model.base_model_prefix).embeddings
    padding_idx = getattr(embeddings, "padding_idx", None)
    return 0 if padding_idx is None else padding_idx + 1


class MaskedLM(nn.Module):
    """Wraps an HF MLM model; ``forward(**batch)`` returns the scalar MLM loss.

    ``document_sep_id``: attend within documents (hpc_bert.model.doc_attention), documents
    ending at this token id; None attends across the whole row. ``attention_kernel`` "flex"
    applies that mask with FlexAttention instead of SDPA (no attention dropout there)."""

    def __init__(self, hf_model: nn.Module, sparse_prediction: bool = True, max_predictions: int | None = None,
                 document_sep_id: int | None = None, attention_kernel: str = "sdpa"):
        super().__init__()
        self.hf_model = use_cpu_dropout(hf_model)  # same dropout, cheaper masks, on CPU only
        self.sparse_prediction = sparse_prediction
        self.max_predictions = max_predictions  # per sequence; None: gather however many are masked
        self.document_sep_id, self.attention_kernel = document_sep_id, attention_kernel
        self.position_offset = position_offset(hf_model)
        if attention_kernel == "flex":
            if document_sep_id is None:
                raise ValueError("the flex attention kernel applies the document mask: pass document_sep_id")
            hf_model.set_attn_implementation("flex_attention")
        self.encode = self._encode              # model.compile swaps these two for compiled versions
        self.head_loss = self._head_loss

    @property
    def encoder(self) -> nn.Module:
        return getattr(self.hf_model, self.hf_model.base_model_prefix)

    @property
    def head(self) -> nn.Module:
        return mlm_head(self.hf_model)

    def forward(self, input_ids, attention_mask, token_type_ids, labels):
        position_ids = None
        if self.document_sep_id is not None:
            attention_mask, position_ids = mask_and_positions(
                input_ids, labels != IGNORE_INDEX, attention_mask, self.document_sep_id, self.attention_kernel,
                self.position_offset)
        if not self.sparse_prediction:
            if isinstance(attention_mask, torch.Tensor) and attention_mask.ndim == 2:
                attention_mask = attention_mask.bool()[:, None, None, :]  # see _encode
            return self.hf_model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                                 position_ids=position_ids, labels=labels).loss
        hidden = self.encode(input_ids, attention_mask, token_type_ids, position_ids)
        if self.max_predictions is None:
            masked = labels != IGNORE_INDEX
            return self.head_loss(hidden[masked], labels[masked])
        rows, labels = static_gather(hidden, labels, self.max_predictions * labels.shape[0])
        return self.head_loss(rows, labels)

    def _encode(self, input_ids, attention_mask, token_type_ids, position_ids=None):
        if isinstance(attention_mask, torch.Tensor) and attention_mask.ndim == 2:
            # as a 4-D boolean mask transformers uses it as it is; from a 2-D one it first asks
            # the device whether the batch has padding at all (a host sync per micro batch)
            attention_mask = attention_mask.bool()[:, None, None, :]
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                            position_ids=position_ids).last_hidden_state

    def _head_loss(self, rows, labels):
        """Mean cross-entropy of the rows' predictions over the labels that are not ignored."""
        return F.cross_entropy(self.head(rows).float(), labels, ignore_index=IGNORE_INDEX)


def static_gather(hidden: torch.Tensor, labels: torch.Tensor, slots: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``slots`` masked positions of ``hidden`` [B, L, H] in row-major order, as
    ([slots, H], [slots] labels), padded with ignored rows. The caller guarantees at most
    ``slots`` labels; a stable sort puts the masked positions first in their original order."""
    flat_labels = labels.reshape(-1)
    n = flat_labels.numel()
    if slots >= n:  # every position fits: no gather needed
        return hidden.reshape(n, -1), flat_labels
    unmasked = (flat_labels == IGNORE_INDEX).to(torch.uint8)
    order = torch.sort(unmasked, stable=True).indices[:slots]
    return hidden.reshape(n, -1).index_select(0, order), flat_labels.index_select(0, order)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_vocab_size(model_cfg, n_tokens: int) -> int:
    """The embedding rows: --vocab_size, else the tokenizer's size padded to a multiple of 8."""
    return model_cfg.vocab_size or padded_vocab_size(n_tokens)


def parameter_count(model_cfg, vocab_size: int) -> int:
    """Parameters of the model ``build_hf_model`` makes, built on the meta device (no memory,
    no initialisation: about a second for BERT-large), for sizing before any job starts."""
    with torch.device("meta"):
        return count_parameters(build_hf_model(model_cfg, vocab_size))

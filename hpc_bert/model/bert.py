"""The BERT MLM, built from config (no hub), with a sparse MLM head.

post-LN -> transformers' ``BertForMaskedLM``; pre-LN -> ``RobertaPreLayerNormForMaskedLM``
(pre-LN BERT: LayerNorm before each sublayer plus a final LayerNorm, which is what lets
the paper's recipe use a 1e-3 peak LR). Both use SDPA attention and save as ordinary HF
dirs that ``AutoModelForSequenceClassification.from_pretrained`` loads.

Sparse prediction: only ~15% of positions carry a label, so the encoder output is gathered
at those positions before the MLM head (a hidden x vocab matmul, the largest in the model
for small widths). The loss is the same mean cross-entropy over masked tokens.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hpc_bert.model.cpu_dropout import use_cpu_dropout

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


class MaskedLM(nn.Module):
    """Wraps an HF MLM model; ``forward(**batch)`` returns the scalar MLM loss."""

    def __init__(self, hf_model: nn.Module, sparse_prediction: bool = True):
        super().__init__()
        self.hf_model = use_cpu_dropout(hf_model)  # same dropout, cheaper masks on CPU
        self.sparse_prediction = sparse_prediction

    @property
    def encoder(self) -> nn.Module:
        return getattr(self.hf_model, self.hf_model.base_model_prefix)

    @property
    def head(self) -> nn.Module:
        return mlm_head(self.hf_model)

    def forward(self, input_ids, attention_mask, token_type_ids, labels):
        if not self.sparse_prediction:
            return self.hf_model(input_ids=input_ids, attention_mask=attention_mask,
                                 token_type_ids=token_type_ids, labels=labels).loss
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state
        masked = labels != IGNORE_INDEX
        logits = self.head(hidden[masked])  # [n_masked, vocab]
        return F.cross_entropy(logits.float(), labels[masked])


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

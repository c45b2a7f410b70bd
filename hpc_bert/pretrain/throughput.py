"""Throughput of the training loop: samples/s, real tokens/s, tokens seen and MFU.

Real tokens are the attention mask's ones (padding excluded), counted on the host as each
micro batch leaves the loader, before it is moved to the device: counting needs no device
value, so the optimizer step stays free of host syncs. Each rank counts its own micro
batches; the counts travel in the print step's all-reduce (and before each checkpoint, so
``tokens_seen`` in the checkpoint's train state is exact and a resumed run continues it).
"""
from __future__ import annotations

import time
from typing import Iterator

from hpc_bert.model.flops import device_name, device_peak_tflops, mfu, training_flops_per_token


class Throughput:
    def __init__(self, flops_per_token: float, peak_tflops: float | None, devices: int, device: str = "cpu"):
        self.flops_per_token, self.peak_tflops, self.devices = flops_per_token, peak_tflops, devices
        self.device_name = device_name(device)
        self.pending = 0  # this rank's real tokens not yet summed over the ranks
        self._t = time.monotonic()
        self._samples = self._tokens = None

    def counting(self, batches: Iterator) -> Iterator:
        """``batches``, counting each micro batch's real tokens on the host as it passes."""
        for batch in batches:
            # numpy on the host copy: no torch op, so nothing a device would wait for
            self.pending += int(batch.tensors["attention_mask"].numpy().sum())
            yield batch

    def take_pending(self) -> float:
        """This rank's uncounted tokens, reset: sum the result over the ranks into tokens_seen."""
        n, self.pending = self.pending, 0
        return float(n)

    def start(self, samples_seen: int, tokens_seen: int) -> None:
        self._t, self._samples, self._tokens = time.monotonic(), samples_seen, tokens_seen

    def fields(self, samples_seen: int, tokens_seen: int) -> dict:
        """The train event's throughput fields since the previous call (or ``start``)."""
        now = time.monotonic()
        dt = max(now - self._t, 1e-9)
        samples_per_s = (samples_seen - self._samples) / dt
        tokens_per_s = (tokens_seen - self._tokens) / dt
        self.start(samples_seen, tokens_seen)
        out = {"samples_per_s": samples_per_s, "tokens_per_s": tokens_per_s, "tokens_seen": tokens_seen}
        utilisation = mfu(tokens_per_s, self.flops_per_token, self.peak_tflops, self.devices)
        if utilisation is not None:
            out["mfu"] = utilisation
        return out


def throughput_for(cfg, vocab_size: int, info, device: str, world: int) -> Throughput:
    """The loop's Throughput: FLOPs per token of this model on these shards, this device's peak."""
    if not cfg.model.sparse_mask_prediction:
        predicted = 1.0  # the dense head runs on every position
    elif cfg.data.dynamic_masking:
        predicted = cfg.data.mlm_probability
    else:
        predicted = info.max_predictions_per_seq / info.max_seq_length
    flops = training_flops_per_token(cfg.model, vocab_size, info.max_seq_length, predicted)
    return Throughput(flops, device_peak_tflops(device, cfg.runtime.peak_tflops), world, device)

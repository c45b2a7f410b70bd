"""The DeepSpeed engine the trainer steps: its config, its construction, one optimizer step.

The trainer, the benchmarks and the tests build the engine here, so what is measured is
what runs. The optimizer is a torch object and the LR is set per step by the trainer: no
DeepSpeed optimizer or scheduler section, so no op is JIT-compiled for them.
"""
from __future__ import annotations

import torch

from hpc_bert.errors import UserError


def deepspeed_config(cfg, accum: int, device: str) -> dict:
    if cfg.runtime.fp16 and device == "cpu":
        raise UserError("--fp16 needs a GPU (dynamic loss scaling is a CUDA path): drop --fp16 on CPU, or use --bf16")
    return {"train_batch_size": cfg.optim.train_batch_size,
            "train_micro_batch_size_per_gpu": cfg.optim.train_micro_batch_size_per_gpu,
            "gradient_accumulation_steps": accum, "gradient_clipping": cfg.optim.gradient_clipping,
            "zero_optimization": {"stage": cfg.runtime.zero_stage},
            "fp16": {"enabled": cfg.runtime.fp16, "loss_scale": 0, "initial_scale_power": 16},
            # bf16 as torch autocast over fp32 weights: on an H200 (BERT-large, bench/gpu.sh) this ran 1.53x faster than
            # DeepSpeed's bf16 weights + fp32 master copy, and needs no loss scaling.
            "torch_autocast": {"enabled": cfg.runtime.bf16, "dtype": "bfloat16"},
            "zero_allow_untested_optimizer": True,
            "steps_per_print": 10 ** 12, "wall_clock_breakdown": False}


def initialize_engine(model: torch.nn.Module, optimizer: torch.optim.Optimizer, config: dict):
    """(engine, its optimizer) for ``model``; the process group must exist."""
    import deepspeed

    engine, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    if engine.dp_world_size == 1 and config["zero_optimization"]["stage"] == 0:
        # One rank: the gradient all-reduce is the identity (a sum over one rank, then x 1/1, exact), but
        # the engine still flattens every gradient into a buffer, scales it and copies it back: 3-4 passes
        # over the gradients per step, ~4% of a CPU step at 4x256. ZeRO stages reduce in their own code.
        engine.enable_backward_allreduce = False
    return engine, optimizer


def accumulate(engine, batches, accum: int, device: str) -> tuple[torch.Tensor, int, list]:
    """``accum`` micro batches = one optimizer step of the engine. Returns the summed loss, still
    on the device (nothing here waits for it), how many epochs ended, and the global batch's
    sample ids (the same whatever the world size)."""
    loss_sum, epochs_ended, step_ids = torch.zeros((), dtype=torch.float64, device=device), 0, []
    for _ in range(accum):
        batch = next(batches)
        step_ids.append(batch.round_sample_ids)
        loss = engine(**{k: t.to(device) for k, t in batch.tensors.items()})
        engine.backward(loss)
        engine.step()
        loss_sum += loss.detach()
        epochs_ended += int(batch.last_in_epoch)
    return loss_sum, epochs_ended, step_ids

"""Step counts of one fine-tuning run: pure functions of the data size and the flags."""
from __future__ import annotations

import math


def training_steps(num_examples: int, batch_size: int, accumulation: int, epochs: float, max_steps: int) -> int:
    """Optimizer steps of a run, as transformers' Trainer counts them."""
    if max_steps > 0:
        return max_steps
    per_epoch = max(1, math.ceil(math.ceil(num_examples / batch_size) / accumulation))
    return math.ceil(epochs * per_epoch)


def capped_warmup(warmup_steps: float, total_steps: int) -> tuple[float, str | None]:
    """Warmup of at least all steps never reaches the peak LR (and transformers' polynomial
    schedule divides by zero at equality): cap it at a tenth of the steps, saying so."""
    if warmup_steps < 1 or warmup_steps < total_steps:
        return warmup_steps, None
    capped = total_steps // 10
    return capped, (f"--warmup_steps {warmup_steps:g} is not below the run's {total_steps} training steps: "
                    f"warmup capped at {capped} steps (a tenth); pass a smaller --warmup_steps to choose")

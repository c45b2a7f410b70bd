"""--compile: torch.compile of the encoder and of head + loss, done before the clock starts.

Compiling the encoder lets Inductor fuse bias-GELU and bias-dropout-residual-LayerNorm;
compiling head + loss fuses the decoder's output with the cross-entropy. Both are compiled
in place (``nn.Module.compile`` / a compiled bound function), so parameter names and
checkpoints are unchanged.

torch.compile is lazy, so ``prepare_compiled`` runs one forward + backward on a synthetic
batch of the training shape before the engine exists: that compile is startup, recorded in
the ledger, never budget. Gradients are dropped and the RNG state restored afterwards, so
the run's numbers do not depend on the warmup (under --fp16 DeepSpeed casts the weights to
half afterwards, so the first step compiles again, inside the budget). Inductor's cache lives in a stable folder
(default RUN_DIR/compile_cache), so a requeued allocation reads compiled code back instead
of compiling again. Where the backend is missing, one log line and eager mode.
"""
from __future__ import annotations

import os
import time
from typing import Callable

import torch

from hpc_bert.layout import COMPILE_CACHE_DIR
from hpc_bert.model.bert import IGNORE_INDEX


def use_compile(runtime, device: str) -> bool:
    """--compile: auto (on with CUDA, off on CPU), true or false."""
    if runtime.compile == "auto":
        return device.startswith("cuda")
    return runtime.compile == "true"


def set_cache_dir(runtime, run_dir: str) -> str:
    """Point Inductor (and Triton) at the stable cache folder; must run before the first compile."""
    folder = os.path.abspath(runtime.compile_cache_dir or os.path.join(run_dir, COMPILE_CACHE_DIR))
    os.makedirs(folder, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder
    os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(folder, "triton"))
    return folder


def backend_missing() -> str | None:
    """Why Inductor cannot compile here (no C++ compiler on CPU, no Triton on CUDA), or None."""
    try:
        import torch._inductor.config  # noqa: F401  (imports the backend)
    except Exception as e:  # the backend's own import error says what is missing
        return f"{type(e).__name__}: {e}"
    import shutil
    if not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")):
        return "no C++ compiler on PATH (Inductor's CPU backend needs one)"
    if torch.cuda.is_available():
        try:
            import triton  # noqa: F401
        except ImportError:
            return "triton is not installed (Inductor's CUDA backend needs it)"
    return None


def compile_masked_lm(model) -> None:
    """Compile ``model`` (a bert.MaskedLM) in place: the encoder module and the head + loss."""
    model.encoder.compile()
    # the head's row count is static with a bounded gather; dynamic masking varies it
    model.head_loss = torch.compile(model._head_loss, dynamic=model.max_predictions is None)


def warmup_batch(micro: int, seq_len: int, vocab_size: int, max_predictions: int | None, device: str) -> dict:
    """A batch of the training shape with every row's slots masked (values do not matter)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab_size, (micro, seq_len), generator=g)
    labels = torch.full_like(ids, IGNORE_INDEX)
    k = max(1, min(seq_len - 1, max_predictions or round(0.15 * seq_len)))
    labels[:, 1:1 + k] = ids[:, 1:1 + k]
    return {k_: v.to(device) for k_, v in {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                                         "token_type_ids": torch.zeros_like(ids), "labels": labels}.items()}


def prepare_compiled(model, runtime, run_dir: str, device: str, micro: int, seq_len: int,
                     log: Callable[[str], None], eval_micro: int | None = None) -> float:
    """Compile ``model`` and run the compile now: a training forward + backward and, when the run
    validates (``eval_micro``), an eval forward of that batch size. Returns the seconds (0.0 in
    eager mode)."""
    missing = backend_missing()
    if missing:
        log(f"--compile: {missing}; training in eager mode")
        return 0.0
    folder = set_cache_dir(runtime, run_dir)
    t0 = time.perf_counter()
    compile_masked_lm(model)
    vocab = model.hf_model.config.vocab_size
    batch = warmup_batch(micro, seq_len, vocab, model.max_predictions, device)
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    was_training = model.training
    model.to(device).train()
    with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=runtime.bf16):
        loss = model(**batch)
    loss.backward()
    model.zero_grad(set_to_none=True)
    if eval_micro:
        model.eval()
        with torch.no_grad(), torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16,
                                             enabled=runtime.bf16):
            model(**warmup_batch(eval_micro, seq_len, vocab, model.max_predictions, device))
    model.train(was_training)
    torch.set_rng_state(cpu_rng)
    if cuda_rng is not None:
        torch.cuda.set_rng_state_all(cuda_rng)
    seconds = time.perf_counter() - t0
    log(f"--compile: compiled encoder and head + loss in {seconds:.1f} s (cache {folder})")
    return seconds

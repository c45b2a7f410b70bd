"""Facts about the time before the budget clock starts: when this process began (startup counts
from there, imports included) and whether a checkpoint can be resumed under this config."""
from __future__ import annotations

import os
import time

from hpc_bert.errors import UserError


def _process_start() -> float:
    """Wall time this process started (imports included in startup), now if unknown."""
    try:
        import psutil
        return psutil.Process(os.getpid()).create_time()
    except Exception:  # psutil is a DeepSpeed dependency, but startup is only reported
        return time.time()


PROCESS_START = _process_start()
# Fields that must match to resume: the model's shape and the data geometry.
SHAPE_FIELDS = ("encoder_ln_mode", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size", "max_position_embeddings", "hidden_act")


def check_resume_compatible(meta: dict, cfg, vocab_size: int) -> None:
    """Refuse, with one line, to resume a checkpoint under a config it cannot continue."""
    where = meta.get("tag", "the checkpoint")
    old_shape, new_shape = meta["model_shape"], {f: getattr(cfg.model, f) for f in SHAPE_FIELDS}
    diff = [f"{k} {old_shape.get(k)} -> {v}" for k, v in new_shape.items() if old_shape.get(k) != v]
    if diff:
        raise UserError(f"cannot resume {where}: model shape differs ({', '.join(diff)}): use the original "
                        "model flags or a new --output_dir")
    if meta["vocab_size"] != vocab_size:
        raise UserError(f"cannot resume {where}: vocab size {meta['vocab_size']} -> {vocab_size}: use the "
                        "original --tokenizer_name or a new --output_dir")
    saved_batch = meta.get("config", {}).get("train_batch_size", cfg.optim.train_batch_size)
    if saved_batch != cfg.optim.train_batch_size:  # the world size may change; the global batch may not
        raise UserError(f"cannot resume {where}: --train_batch_size {saved_batch} -> {cfg.optim.train_batch_size} "
                        f"changes the global batches: pass --train_batch_size {saved_batch} (any world size "
                        "that divides it works)")


def document_sep_id(model_cfg, info, tokenizer, device: str) -> int | None:
    """The token that ends a document in the shards' rows when attention is per document, else None."""
    if not model_cfg.document_attention(info.packing):
        return None
    if model_cfg.attention_kernel == "flex" and not device.startswith("cuda"):
        raise UserError("--attention_kernel flex trains on CUDA only (FlexAttention has no CPU backward): "
                        "use --attention_kernel sdpa on CPU")
    if model_cfg.attention_kernel == "flex" and model_cfg.attention_probs_dropout_prob > 0:
        raise UserError("--attention_kernel flex has no attention dropout: pass "
                        "--attention_probs_dropout_prob 0, or use --attention_kernel sdpa")
    recorded = info.special_ids.get("sep_token_id")  # ABB's files record none: the tokenizer's then
    return tokenizer.sep_token_id if recorded is None else recorded

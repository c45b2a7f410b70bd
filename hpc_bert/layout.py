"""Names in a run dir that the trainer writes and GLUE reads: one definition for both.

Kept free of heavy imports so the launcher and the GLUE grid can use it cheaply.
"""
from __future__ import annotations

FINETUNE_DIR = "finetune_checkpoints"  # RUN_DIR/finetune_checkpoints/<name>/ are HF dirs
FINAL_NAME = "final"                   # saved by --finetune_checkpoint_at_end
MARKER_PREFIX = "marker_"              # marker_0.25 ... saved by --finetune_time_markers
COMPILE_CACHE_DIR = "compile_cache"    # Inductor's cache for --compile, kept across allocations


def marker_name(fraction: float) -> str:
    return f"{MARKER_PREFIX}{fraction:g}"

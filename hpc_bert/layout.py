"""Names in a run dir that the trainer writes and GLUE reads: one definition for both.

Kept free of heavy imports so the launcher and the GLUE grid can use it cheaply.
"""
from __future__ import annotations

FINETUNE_DIR = "finetune_checkpoints"  # RUN_DIR/finetune_checkpoints/<name>/ are HF dirs
FINAL_NAME = "final"                   # saved by --finetune_checkpoint_at_end
MARKER_PREFIX = "marker_"              # marker_0.25 ... saved by --finetune_time_markers


def marker_name(fraction: float) -> str:
    return f"{MARKER_PREFIX}{fraction:g}"


# GLUE: RUN_DIR/glue/<checkpoint>/<task>/<run>/ holds results.json and, with --do_predict, one
# predictions file per test split; `glue submission` zips the chosen runs' files for the server.
GLUE_RESULTS_FILE = "results.json"
PREDICTIONS_PREFIX = "predictions_"


def predictions_name(split: str) -> str:
    return f"{PREDICTIONS_PREFIX}{split}.tsv"  # e.g. predictions_test_matched.tsv


def submission_name(checkpoint: str) -> str:
    return f"glue_submission_{checkpoint}.zip"

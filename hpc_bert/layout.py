"""Every name inside a run dir: what the trainer, the launcher, status and GLUE write and read.

One definition for all of them (the data pipeline's shard names live in hpc_bert/data/).
Kept free of heavy imports so the launcher and the GLUE grid can use it cheaply.

RUN_DIR/
  .hpc_bert.lock             the run lock (runlock.py)
  budget.json                the ledger (pretrain/clock.py)
  metrics.jsonl              the event log (pretrain/events.py)
  tensorboard/               TensorBoard scalars
  checkpoints/               training checkpoints: step_<9 digits>/meta.json, latest.json
  finetune_checkpoints/      HF dirs marker_<fraction>/ and final/, each with hpc_bert_meta.json
  submitit/                  submitit's job folder (scripts, pickles, logs)
  glue/                      GLUE runs: <checkpoint>/<task>/<lr_seed>/results.json (+ predictions_<split>.tsv)
  glue_submission_<ckpt>.zip the GLUE server's zip (python -m hpc_bert.glue submission)
  glue_results.md / .csv     the GLUE table
  wandb_run.json, wandb/     the W&B run id that every allocation resumes, W&B's files
  chain.json                 job ids of the submitted chain (status, submit --cancel)
  submit_args.json           the submit flags of the chain, for submit --run_dir R --budget H
  abandoned_checkpoints/     after an extension: the abandoned decay's training checkpoints, by old budget
  hang_stacks/               rank_<r>.<job>.txt: every thread's stack of a rank that hung (pretrain/watchdog.py)
  sweep_failed.json          a sweep member's pretraining failed (why, when): not rerun without --retry_failed

SWEEP_DIR/ (python -m hpc_bert.sweep)
  sweep.json                 the grid's members and each submission's job ids (status, --cancel, resubmit)
  sweep_results.md / .csv    the leaderboard
  submitit/                  the pretraining job array's scripts and logs
  <member>/                  each member's run dir, as above
"""
from __future__ import annotations

import json
import os

LOCK_NAME = ".hpc_bert.lock"
LEDGER_NAME = "budget.json"
METRICS_NAME = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_POINTER = "latest.json"     # {tag, step, elapsed_s} of the newest complete checkpoint
CHECKPOINT_META = "meta.json"          # written last: a checkpoint folder with it is complete
FINETUNE_DIR = "finetune_checkpoints"  # RUN_DIR/finetune_checkpoints/<name>/ are HF dirs
FINETUNE_META = "hpc_bert_meta.json"   # written last into a fine-tune checkpoint
FINAL_NAME = "final"                   # saved by --finetune_checkpoint_at_end
MARKER_PREFIX = "marker_"              # marker_0.25 ... saved by --finetune_time_markers
SUBMITIT_DIR = "submitit"
GLUE_DIR = "glue"
GLUE_RESULTS = "results.json"          # one fine-tuning run's scores
GLUE_TABLE_MD = "glue_results.md"
GLUE_TABLE_CSV = "glue_results.csv"
COMPILE_CACHE_DIR = "compile_cache"    # Inductor's cache for --compile, kept across allocations
WANDB_RUN_FILE = "wandb_run.json"      # the W&B run id every allocation resumes (--report_to wandb)
CHAIN_FILE = "chain.json"              # job ids of the submitted chain, for status and --cancel
SUBMIT_ARGS_FILE = "submit_args.json"  # submit's flags, so a budget change needs only --run_dir and --budget
ABANDONED_DIR = "abandoned_checkpoints"  # <budget label>/step_*: a decay an extension restarted, never resumed
HANG_STACKS_DIR = "hang_stacks"        # stacks written by the hang watchdog, one file per rank and job
MEMBER_FAILED = "sweep_failed.json"    # a sweep member's pretraining failed
SWEEP_FILE = "sweep.json"              # SWEEP_DIR: the members and the submissions
SWEEP_RESULTS_MD = "sweep_results.md"  # SWEEP_DIR: the leaderboard
SWEEP_RESULTS_CSV = "sweep_results.csv"


def budget_label(budget_s: float) -> str:
    """Names what belongs to one budget: ``budget_24h`` (markers and GLUE results before a change)."""
    return f"budget_{budget_s / 3600:.4g}h"


def marker_name(fraction: float) -> str:
    return f"{MARKER_PREFIX}{fraction:g}"


# GLUE: RUN_DIR/glue/<checkpoint>/<task>/<run>/ holds results.json and, with --do_predict, one
# predictions file per test split; `glue submission` zips the chosen runs' files for the server.
PREDICTIONS_PREFIX = "predictions_"


def predictions_name(split: str) -> str:
    return f"{PREDICTIONS_PREFIX}{split}.tsv"  # e.g. predictions_test_matched.tsv


def submission_name(checkpoint: str) -> str:
    return f"glue_submission_{checkpoint}.zip"


def read_events(run_dir: str) -> list[dict]:
    """Every event of RUN_DIR/metrics.jsonl in order (written by pretrain/events.py), [] when absent."""
    path = os.path.join(run_dir, METRICS_NAME)
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue  # a line torn by a crash
    return out

"""The files one fine-tune run writes beside its model: results.json and predictions_<split>.tsv.

A leaf of the glue package: the run writes them (finetune), the grid and the table read them
(grid, aggregate), the zip copies them (submission). Keeping their format here is what lets those
modules import each other in one direction only.
"""
from __future__ import annotations

import csv
import json
import os
from typing import Sequence

from hpc_bert.atomic import write_text_atomic
from hpc_bert.errors import UserError
from hpc_bert.glue.tasks import TaskSpec
from hpc_bert.layout import GLUE_RESULTS as RESULTS_FILE, predictions_name

PREDICTIONS_HEADER = ("index", "prediction")


def read_results(folder: str) -> dict:
    """The results.json a run wrote into ``folder``; OSError / ValueError when absent or unreadable."""
    with open(os.path.join(folder, RESULTS_FILE)) as fh:
        return json.load(fh)


def has_results(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, RESULTS_FILE))


def start_record(model_path: str) -> dict | None:
    """Where a run started from when its model is itself a fine-tuned run (results.json beside it):
    that run's task and pretraining checkpoint, so the table files it under the right row."""
    try:
        prev = read_results(model_path)
    except (OSError, ValueError):
        return None
    origin = (prev.get("start_from") or {}).get("checkpoint") or prev.get("checkpoint")
    return {"task": prev.get("task"), "checkpoint": origin, "model": model_path}


def format_prediction(task: TaskSpec, value) -> str:
    return f"{float(value):.3f}" if task.is_regression else task.labels[int(value)]


def write_predictions(folder: str, task: TaskSpec, split: str, indices: Sequence[str], values) -> str:
    """predictions_<split>.tsv in ``folder``; returns the file name (what results.json records)."""
    if len(indices) != len(values):
        raise ValueError(f"{len(values)} predictions for {len(indices)} test rows")
    rows = [f"{i}\t{format_prediction(task, v)}" for i, v in zip(indices, values)]
    name = predictions_name(split)
    write_text_atomic(os.path.join(folder, name), "\n".join(["\t".join(PREDICTIONS_HEADER), *rows]) + "\n")
    return name


def read_predictions(path: str) -> list[tuple[str, str]]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows or tuple(rows[0]) != PREDICTIONS_HEADER:
        raise UserError(f"{path} is not a predictions file (header {' '.join(PREDICTIONS_HEADER)}): rerun that "
                        "fine-tune with --do_predict")
    return [(r[0], r[1]) for r in rows[1:] if r]

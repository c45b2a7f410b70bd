"""GLUE metrics from predictions: scikit-learn for classification, scipy for correlations.

Scores stay in [0, 1] (correlations in [-1, 1]) in results.json; the table multiplies by 100
as GLUE papers do.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from hpc_bert.glue.tasks import TaskSpec


def _correlation(fn, preds: np.ndarray, labels: np.ndarray) -> float:
    # A constant prediction (a diverged or untrained regressor) has no correlation; scipy says
    # NaN, which would poison medians and rankings, so it counts as 0.
    if len(preds) < 2 or np.all(preds == preds[0]) or np.all(labels == labels[0]):
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float(fn(preds, labels)[0])
    return 0.0 if math.isnan(value) else value


# scipy and scikit-learn load on first use: together they take ~0.9 s, which every command that
# reads the GLUE grid (submit, status) would otherwise pay at start-up.
def pearson(preds, labels) -> float:
    from scipy import stats
    return _correlation(stats.pearsonr, np.asarray(preds, float), np.asarray(labels, float))


def spearman(preds, labels) -> float:
    from scipy import stats
    return _correlation(stats.spearmanr, np.asarray(preds, float), np.asarray(labels, float))


def accuracy(preds, labels) -> float:
    from sklearn.metrics import accuracy_score
    return float(accuracy_score(labels, preds))


def f1(preds, labels) -> float:
    """Binary F1 of the positive class 1 (paraphrase / duplicate), as GLUE scores MRPC and QQP."""
    from sklearn.metrics import f1_score
    return float(f1_score(labels, preds, pos_label=1, average="binary", zero_division=0))


def mcc(preds, labels) -> float:
    from sklearn.metrics import matthews_corrcoef
    return float(matthews_corrcoef(labels, preds))


METRICS = {"accuracy": accuracy, "f1": f1, "mcc": mcc, "pearson": pearson, "spearman": spearman}


def metric_names(task: TaskSpec) -> list[str]:
    names = [c.metric for c in task.columns] + list(task.extra_metrics)
    return list(dict.fromkeys(names))


def predictions_from_logits(task: TaskSpec, logits) -> np.ndarray:
    logits = np.asarray(logits)
    if task.is_regression:
        return logits.reshape(-1).astype(float)
    return logits.argmax(axis=-1)


def compute_metrics(task: TaskSpec, preds, labels) -> dict[str, float]:
    """All metrics of ``task`` for one evaluation split (preds are class ids or scores)."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    if len(preds) != len(labels):
        raise ValueError(f"{len(preds)} predictions for {len(labels)} labels")
    return {name: METRICS[name](preds, labels) for name in metric_names(task)}


def task_scores(task: TaskSpec, metrics_by_split: dict[str, dict[str, float]]) -> dict[str, float]:
    """The table columns of ``task`` (e.g. {'MNLI-m': .84, 'MNLI-mm': .83}) from per-split metrics."""
    return {c.label: metrics_by_split[c.split][c.metric] for c in task.columns
            if c.split in metrics_by_split and c.metric in metrics_by_split[c.split]}


def main_score(task: TaskSpec, scores: dict[str, float]) -> float | None:
    """One number to rank runs of a task by: the mean of its table columns."""
    values = [scores[c.label] for c in task.columns if c.label in scores]
    return sum(values) / len(values) if len(values) == len(task.columns) else None

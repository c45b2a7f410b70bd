"""GLUE metrics against values computed by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from hpc_bert.glue import metrics as m
from hpc_bert.glue.tasks import get_task

# preds vs labels: TP = 2 (idx 0, 3), TN = 1 (idx 1), FP = 1 (idx 2), FN = 0
PREDS, LABELS = [1, 0, 1, 1], [1, 0, 0, 1]


def test_accuracy():
    assert m.accuracy(PREDS, LABELS) == pytest.approx(3 / 4)


def test_f1_of_the_positive_class():
    # precision 2/3, recall 2/2 -> 2 * (2/3) * 1 / (2/3 + 1) = 0.8
    assert m.f1(PREDS, LABELS) == pytest.approx(0.8)
    assert m.f1([0, 0, 0, 0], LABELS) == 0.0  # no positive prediction: 0, not a warning


def test_matthews_correlation():
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = 2 / sqrt(3*2*2*1)
    assert m.mcc(PREDS, LABELS) == pytest.approx(2 / math.sqrt(12))
    assert m.mcc([1, 1, 1, 1], LABELS) == 0.0  # CoLA's degenerate "all acceptable" model


def test_pearson():
    # x - mean: -1.5 -.5 .5 1.5; y - mean: -3.25 -1.25 .75 3.75; cov 11.5, ssx 5, ssy 26.75
    assert m.pearson([1, 2, 3, 4], [2, 4, 6, 9]) == pytest.approx(11.5 / math.sqrt(5 * 26.75))


def test_spearman():
    # rank differences 0 1 1 0 -> 1 - 6 * 2 / (4 * (16 - 1)) = 0.8
    assert m.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert m.spearman([10, 20, 30], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)


def test_constant_predictions_have_zero_correlation_not_nan():
    assert m.pearson([2.5, 2.5, 2.5], [1, 2, 3]) == 0.0
    assert m.spearman([2.5, 2.5, 2.5], [1, 2, 3]) == 0.0


def test_task_metrics_and_main_scores():
    assert m.compute_metrics(get_task("MRPC"), PREDS, LABELS) == pytest.approx({"f1": 0.8, "accuracy": 0.75})
    assert set(m.compute_metrics(get_task("CoLA"), PREDS, LABELS)) == {"mcc", "accuracy"}
    assert set(m.compute_metrics(get_task("STS-B"), [1.0, 2, 3], [1.0, 3, 2])) == {"spearman", "pearson"}
    assert set(m.compute_metrics(get_task("RTE"), PREDS, LABELS)) == {"accuracy"}
    mnli = get_task("MNLI")
    scores = m.task_scores(mnli, {"dev_matched": {"accuracy": 0.8}, "dev_mismatched": {"accuracy": 0.7}})
    assert scores == {"MNLI-m": 0.8, "MNLI-mm": 0.7}
    assert m.main_score(mnli, scores) == pytest.approx(0.75)
    assert m.main_score(mnli, {"MNLI-m": 0.8}) is None  # half a result ranks nothing
    stsb = get_task("STS-B")
    assert m.task_scores(stsb, {"dev": {"spearman": 0.5, "pearson": 0.6}}) == {"STS-B": 0.5}


def test_predictions_from_logits():
    logits = np.array([[0.1, 2.0], [3.0, -1.0]])
    assert list(m.predictions_from_logits(get_task("SST-2"), logits)) == [1, 0]
    assert list(m.predictions_from_logits(get_task("STS-B"), np.array([[1.5], [4.0]]))) == [1.5, 4.0]

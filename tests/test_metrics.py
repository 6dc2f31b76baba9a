"""Task metrics against values worked out by hand on small cases, the task type's metric sets, and bad names."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ptexp.errors import UserError
from ptexp.metrics import compute, is_better, metric_names, task_loss, task_metrics
from tests.conftest import make_config

# A 2x2 table: TP=3 (rows 0-2), FN=1 (row 3), FP=1 (row 4), TN=2 (rows 5-6).
LABELS = [1, 1, 1, 1, 0, 0, 0]
PREDICTIONS = [1, 1, 1, 0, 1, 0, 0]


def test_binary_metrics_match_the_formulas():
    got = compute(["accuracy", "f1", "macro_f1", "mcc"], PREDICTIONS, LABELS)
    assert got["accuracy"] == pytest.approx(5 / 7)
    # F1 of class 1 = 2TP / (2TP + FP + FN) = 6 / 8
    assert got["f1"] == pytest.approx(0.75)
    # class 0: TP=2, FP=1 (row 3), FN=1 (row 4): 4/6; macro = (3/4 + 2/3) / 2 = 17/24
    assert got["macro_f1"] == pytest.approx(17 / 24)
    # MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (6 - 1) / sqrt(4*4*3*3) = 5/12
    assert got["mcc"] == pytest.approx(5 / 12)


def test_three_class_macro_f1_and_accuracy():
    # class 0: F1 1; class 1: TP 0 -> F1 0; class 2: TP=2, FP=1, FN=0 -> 4/5. Macro = 1.8 / 3 = 0.6
    got = compute(["accuracy", "macro_f1"], [0, 2, 2, 2], [0, 1, 2, 2])
    assert got == pytest.approx({"accuracy": 0.75, "macro_f1": 0.6})


def test_regression_metrics_match_the_formulas():
    # x - mean = [-1.5, -.5, .5, 1.5], y - mean = [-3, -1, 0, 4]: r = 11 / sqrt(5 * 26)
    assert compute(["pearson"], [1, 2, 3, 4], [2, 4, 5, 9])["pearson"] == pytest.approx(11 / math.sqrt(130))
    # ranks of y = [1, 3, 2, 4]; d = [0, -1, 1, 0]: rho = 1 - 6 * 2 / (4 * (16 - 1)) = 0.8
    assert compute(["spearman"], [1, 2, 3, 4], [10, 30, 20, 40])["spearman"] == pytest.approx(0.8)
    assert compute(["mse"], [1.0, 2.0], [0.0, 4.0])["mse"] == pytest.approx(2.5)


def test_constant_predictions_give_zero_correlation_not_nan():
    """A model that predicts one score for every pair has no correlation with the labels: 0.0, not scipy's NaN,
    so best-epoch comparisons keep working."""
    got = compute(["pearson", "spearman"], [2.5, 2.5, 2.5], [0.0, 3.0, 5.0])
    assert got == {"pearson": 0.0, "spearman": 0.0}
    assert compute(["mcc"], [1, 1, 1], [0, 1, 1])["mcc"] == 0.0


def test_task_metrics_take_logits():
    logits = torch.tensor([[0.1, 2.0], [3.0, -1.0], [0.0, 0.5]])
    assert task_metrics(["accuracy"], logits, [1, 0, 0], "classification") == pytest.approx({"accuracy": 2 / 3})
    scores = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    got = task_metrics(["pearson", "mse"], scores, [2.0, 4.0, 5.0, 9.0], "regression")
    assert got["pearson"] == pytest.approx(11 / math.sqrt(130)) and got["mse"] == pytest.approx((1 + 4 + 4 + 25) / 4)


def test_task_loss_is_cross_entropy_or_mse():
    logits, labels = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 0])
    assert torch.equal(task_loss(logits, labels, "classification"), F.cross_entropy(logits, labels))
    scores, targets = torch.tensor([[1.0], [3.0]]), torch.tensor([0.0, 4.0])
    assert task_loss(scores, targets, "regression").item() == pytest.approx(1.0)
    assert task_loss(scores, targets, "regression", reduction="sum").item() == pytest.approx(2.0)


@pytest.mark.parametrize(
    "preset,names,primary",
    [
        ("embedded", ["accuracy", "macro_f1"], "accuracy"),
        ("glue_cola", ["accuracy", "macro_f1", "mcc"], "mcc"),
        ("glue_mrpc", ["accuracy", "macro_f1", "f1"], "f1"),
        ("glue_qqp", ["accuracy", "macro_f1", "f1"], "f1"),
        ("glue_stsb", ["pearson", "spearman", "mse"], "pearson"),
        ("glue_mnli", ["accuracy", "macro_f1"], "accuracy"),
        ("superglue_cb", ["accuracy", "macro_f1"], "macro_f1"),
        ("superglue_boolq", ["accuracy", "macro_f1"], "accuracy"),
    ],
)
def test_each_preset_logs_the_standard_metrics_and_its_own(preset, names, primary):
    assert metric_names(make_config(f"data={preset}").data) == (names, primary)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["data.metrics=[bleu]"], "data.metrics: 'bleu' is not a classification metric; valid: accuracy, f1,"),
        (["data=glue_stsb", "data.primary_metric=mcc"], "data.primary_metric: 'mcc' is not a regression metric"),
        (["data.metrics=[f1]", "data.label_names=[a,b,c]"], "data.metrics: f1 is the positive class's F1"),
    ],
)
def test_bad_metric_names_are_user_errors(overrides, message):
    with pytest.raises(UserError) as info:
        metric_names(make_config(*overrides).data)
    assert message in str(info.value)


def test_mse_is_better_lower_and_the_rest_higher():
    assert is_better("mse", 0.5, 1.0) and not is_better("mse", 1.5, 1.0)
    assert is_better("accuracy", 0.8, 0.7) and not is_better("pearson", 0.1, 0.2)
    assert is_better("mcc", -1.0, None)

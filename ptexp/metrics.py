"""Task metrics as transformers' run_glue reports them, computed with scikit-learn and scipy.

Classification runs always log ``accuracy`` and ``macro_f1``; regression runs ``pearson``, ``spearman`` and
``mse``. A task adds its own (``data.metrics``, e.g. ``mcc`` for CoLA, ``f1`` for MRPC/QQP) and names the primary
one (``data.primary_metric``) that picks the best epoch. The loop calls :func:`task_metrics` with the logits
and labels of a whole split, and :func:`task_loss` for the training loss.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ptexp.config import DataConfig, Task
from ptexp.errors import UserError


def _sklearn(name: str, **options) -> Callable[[np.ndarray, np.ndarray], float]:
    """``sklearn.metrics.NAME(labels, predictions, **options)``; scikit-learn (and scipy below) are imported on
    first use, which keeps them out of the start-up and memory of every run that never evaluates."""

    def score(predictions: np.ndarray, labels: np.ndarray) -> float:
        from sklearn import metrics

        return float(getattr(metrics, name)(labels, predictions, **options))

    return score


def load_backends() -> None:
    """Import scikit-learn's metrics and scipy's stats now. The trainer does so before a run's peak-memory
    measurement starts, so that every run of a sequential sweep holds them from its start: else the first run
    loads them at its first evaluation, often after its peak, and later runs hold them throughout (+6% on a
    4-step prefix run after a full one)."""
    from scipy import stats  # noqa: F401
    from sklearn import metrics  # noqa: F401


def _correlation(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """``scipy.stats.NAME``, 0.0 where it is undefined: constant predictions (or labels) have no
    linear/rank relation to anything, and a NaN would break best-epoch comparisons."""

    def score(predictions: np.ndarray, labels: np.ndarray) -> float:
        if len(labels) < 2 or np.ptp(predictions) == 0 or np.ptp(labels) == 0:
            return 0.0
        from scipy import stats

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = float(getattr(stats, name)(predictions, labels)[0])
        return 0.0 if np.isnan(value) else value

    return score


@dataclass(frozen=True)
class Metric:
    fn: Callable[[np.ndarray, np.ndarray], float]  # (predictions or scores, labels) -> value
    task: Task
    higher_is_better: bool = True


METRICS: dict[str, Metric] = {
    "accuracy": Metric(_sklearn("accuracy_score"), Task.classification),
    # F1 of the positive class (label index 1), as GLUE reports it for MRPC and QQP
    "f1": Metric(_sklearn("f1_score", pos_label=1, average="binary", zero_division=0.0), Task.classification),
    "macro_f1": Metric(_sklearn("f1_score", average="macro", zero_division=0.0), Task.classification),
    "mcc": Metric(_sklearn("matthews_corrcoef"), Task.classification),
    "pearson": Metric(_correlation("pearsonr"), Task.regression),
    "spearman": Metric(_correlation("spearmanr"), Task.regression),
    "mse": Metric(_sklearn("mean_squared_error"), Task.regression, higher_is_better=False),
}
ALWAYS = {Task.classification: ["accuracy", "macro_f1"], Task.regression: ["pearson", "spearman", "mse"]}


def metric_names(cfg: DataConfig) -> tuple[list[str], str]:
    """The metrics a run logs (the task type's standard ones, then ``data.metrics``) and its primary one.

    Raises UserError for an unknown name, one of the other task type, or ``f1`` without exactly two labels."""
    task = Task(cfg.task)
    valid = [name for name, metric in METRICS.items() if metric.task == task]
    for key, names in (("data.metrics", list(cfg.metrics)), ("data.primary_metric", [cfg.primary_metric])):
        for name in names:
            if name is not None and name not in valid:
                raise UserError(f"{key}: {name!r} is not a {task.value} metric; valid: {', '.join(valid)}")
    names = ALWAYS[task] + [name for name in cfg.metrics if name not in ALWAYS[task]]
    if "f1" in names and len(cfg.label_names) != 2:
        raise UserError(
            f"data.metrics: f1 is the positive class's F1 and needs two labels, not {len(cfg.label_names)}; "
            "valid: macro_f1"
        )
    primary = cfg.primary_metric or (list(cfg.metrics) or ALWAYS[task])[0]
    return names, primary


def predictions_of(logits: torch.Tensor | np.ndarray, task: Task | str) -> np.ndarray:
    """Class indices (argmax) for classification, the single output for regression."""
    values = logits.detach().float().cpu().numpy() if isinstance(logits, torch.Tensor) else np.asarray(logits)
    if Task(task) == Task.regression:
        return values.reshape(len(values), -1)[:, 0]
    return values.argmax(-1)


def compute(names: Sequence[str], predictions: Sequence, labels: Sequence) -> dict[str, float]:
    """``{name: value}`` from predictions (class indices, or scores for regression) and labels."""
    if len(labels) == 0:
        raise ValueError("no rows to compute metrics on")
    p, y = np.asarray(predictions), np.asarray(labels)
    return {name: METRICS[name].fn(p, y) for name in names}


def task_metrics(
    names: Sequence[str], logits: torch.Tensor | np.ndarray, labels: Sequence, task: Task | str
) -> dict[str, float]:
    """The metrics ``names`` of a whole split from its logits (batch, num_labels) and labels."""
    return compute(names, predictions_of(logits, task), labels)


def task_loss(logits: torch.Tensor, labels: torch.Tensor, task: Task | str, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy for classification; MSE of the single output against float labels for regression."""
    if Task(task) == Task.regression:
        return F.mse_loss(logits.float().view(-1), labels.float().view(-1), reduction=reduction)
    return F.cross_entropy(logits.float(), labels, reduction=reduction)


def is_better(name: str, value: float, best: float | None) -> bool:
    """Whether ``value`` of metric ``name`` beats ``best`` (None: nothing yet); mse is better lower."""
    if best is None:
        return True
    return value < best if not METRICS[name].higher_is_better else value > best

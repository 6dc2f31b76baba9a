"""Evaluation: the task's loss and metrics over a split, and the run's evaluations at a step.

A run evaluates its eval split (``eval/*``), any further eval splits (``eval_NAME/*``, e.g. MNLI mismatched) and,
when one was carved from train, its selection split (``selection/*``). The primary metric's best value on the eval
split is logged as ``eval/best_<primary>``: picked on the split it reports, so optimistic. The selection split's
best is ``selection/best_<primary>`` at ``selection/best_step``; with ``trainer.select_best`` the parameters that
train are restored to that step's before the final evaluation, so the final ``eval/*`` numbers are chosen honestly.
:func:`predict` returns a split's outputs row by row in the split's order; the final evaluation keeps those of the
eval splits, which the trainer writes as the run's predictions (:mod:`ptexp.predictions`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from ptexp.checkpoint import put_trainable, trainable_tensors
from ptexp.config import Task
from ptexp.data import Collator, EncodedSplit
from ptexp.devices import autocast, split_batch
from ptexp.distributed import Dist
from ptexp.metrics import compute, is_better, metric_names, predictions_of, task_loss

LABELS = {"macro_f1": "macro-F1"}  # how a metric is printed, where not by its name


@dataclass(frozen=True)
class TaskSpec:
    """What a run's task is scored by: its type, the metrics it logs, and the primary one."""

    task: Task = Task.classification
    metrics: tuple[str, ...] = ("accuracy", "macro_f1")
    primary: str = "accuracy"

    @classmethod
    def of(cls, data: DictConfig) -> TaskSpec:
        names, primary = metric_names(data)
        return cls(Task(data.task), tuple(names), primary)


def batch_loss(logits: torch.Tensor, labels: torch.Tensor, task: Task, reduction: str = "mean") -> torch.Tensor:
    """The loss of a batch's float32 logits: cross-entropy, or MSE for regression; "mean" or "sum" over the rows."""
    return task_loss(logits, labels, task, reduction)


@dataclass
class SplitOutputs:
    """A split's outputs, row ``i`` of each the split's row ``i`` (its order as loaded): float32 logits
    (rows, num_labels; one column for regression), labels, and the summed loss."""

    logits: np.ndarray
    labels: list
    loss_sum: float

    def predictions(self, task: Task) -> list:
        """Class indices, or scores for regression, as Python numbers."""
        return predictions_of(self.logits, task).tolist()

    def metrics(self, spec: TaskSpec, prefix: str) -> dict[str, float]:
        """``PREFIX/loss`` and ``PREFIX/<metric>`` for each of the task's metrics."""
        scores = compute(spec.metrics, self.predictions(spec.task), self.labels)
        return {f"{prefix}/loss": self.loss_sum / len(self.labels), **{f"{prefix}/{n}": v for n, v in scores.items()}}


@torch.inference_mode()
def predict(
    model: nn.Module,
    data: EncodedSplit,
    batch_size: int,
    collate: Collator,
    device,
    dist: Dist | None = None,
    amp: torch.dtype | None = None,
    spec: TaskSpec | None = None,
) -> SplitOutputs:
    """The model's outputs on every row of ``data``, in the split's row order; batches are formed from the rows
    sorted by length so that they carry little padding.

    Under torchrun each rank runs every ``world``-th of those batches (the very batches a single process would
    form), and the outputs are gathered, so every rank returns the whole split's. ``amp``: the autocast dtype the
    run trains with."""
    dist, spec = dist or Dist(), spec or TaskSpec()
    model.eval()
    order = sorted(range(len(data)), key=lambda i: len(data.input_ids[i]))
    starts = list(range(0, len(order), batch_size))[dist.rank :: dist.world]
    loss_sum, rows, logits, labels = 0.0, [], [], []
    for start in starts:
        batch = order[start : start + batch_size]
        out, batch_labels = forward_batch(model, data, batch, collate, device, amp)
        loss_sum += batch_loss(out, batch_labels, spec.task, "sum").item()
        rows += batch
        logits += out.cpu().numpy().reshape(len(batch), -1).tolist()
        labels += batch_labels.tolist()
    if dist.enabled:
        parts = dist.gather((loss_sum, rows, logits, labels))
        loss_sum = sum(part[0] for part in parts)
        rows, logits, labels = ([x for part in parts for x in part[k]] for k in (1, 2, 3))
    back = sorted(range(len(rows)), key=rows.__getitem__)  # the split's row order, whatever the batches
    return SplitOutputs(
        np.asarray([logits[i] for i in back], dtype=np.float32).reshape(len(back), -1),
        [labels[i] for i in back],
        loss_sum,
    )


def forward_batch(
    model: nn.Module, data: EncodedSplit, rows: list[int], collate: Collator, device, amp: torch.dtype | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The float32 logits and the labels of ``data``'s ``rows``, collated (padded to the longest) and run through
    ``model`` under the run's autocast: one batch of :func:`predict` (and of the inference timing)."""
    inputs, labels = split_batch(collate([data[i] for i in rows]), device)
    with autocast(amp, device):
        logits = model(**inputs)
    return logits.float(), labels


def step_line(metrics: dict[str, float], spec: TaskSpec) -> str:
    """``eval loss ...  | selection loss ...``: the splits scored at a step, for the log line ("" for none)."""
    parts = [f"{prefix} {describe(metrics, prefix, spec)}" for prefix in ("eval", "selection")
             if f"{prefix}/loss" in metrics]  # fmt: skip
    return "  | ".join(parts)


def describe(metrics: dict[str, float], prefix: str, spec: TaskSpec) -> str:
    """``loss 0.1234  accuracy 0.8000  macro-F1 0.7900``: a split's metrics for the log line."""
    names = ["loss", *spec.metrics]
    return "  ".join(f"{LABELS.get(n, n)} {metrics[f'{prefix}/{n}']:.4f}" for n in names if f"{prefix}/{n}" in metrics)


@dataclass
class EvalSets:
    """The splits a run evaluates: the eval split, further eval splits by name, and the selection split."""

    eval: EncodedSplit
    extras: dict[str, EncodedSplit] = field(default_factory=dict)
    selection: EncodedSplit | None = None


class Evaluator:
    """Runs a step's evaluations, keeps the best values, and restores the selected parameters at the end."""

    def __init__(self, model: nn.Module, sets: EvalSets, spec: TaskSpec, run_eval, *, select_best: bool,
                 history: bool = True, kept=None):  # fmt: skip
        self.model, self.sets, self.spec, self.select_best = model, sets, spec, select_best
        self.history = history  # score the eval splits at every step's evaluation, not only at the final one
        self.run_eval = run_eval  # split -> SplitOutputs: :func:`predict` with the run's batch size, device...
        self.kept: dict[str, SplitOutputs] = {} if kept is None else kept  # the final evaluation's, by prefix

    def score(self, split: EncodedSplit, prefix: str, final: bool) -> dict[str, float]:
        """``split``'s metrics under ``prefix``; the outputs of a final eval split are kept in ``kept``."""
        outputs = self.run_eval(split)
        if final and prefix != "selection":
            self.kept[prefix] = outputs
        return outputs.metrics(self.spec, prefix)

    def at_step(self, step: int, best, final: bool = False) -> dict[str, float]:
        """Every split's metrics at ``step``, with the best values so far, which it updates in ``best`` (the loop's
        state: ``best`` on the eval split, ``selection_best`` at ``selection_best_step`` and, for
        ``trainer.select_best``, ``best_trainable``, the parameters that train at that step). ``final``: with
        ``select_best``, the best step's parameters are put back before the eval splits are scored, and the eval
        splits' outputs are kept (``kept``) for the run's predictions artifact."""
        metrics: dict[str, float] = {}
        primary = self.spec.primary
        if self.sets.selection is not None:
            metrics |= self.score(self.sets.selection, "selection", final)
            value = metrics[f"selection/{primary}"]
            if is_better(primary, value, best.selection_best):
                best.selection_best, best.selection_best_step = value, step
                if self.select_best and not final:
                    best.best_trainable = trainable_tensors(self.model)
            metrics |= {
                f"selection/best_{primary}": best.selection_best,
                "selection/best_step": best.selection_best_step,
            }
            if final and self.select_best and best.selection_best_step != step:
                put_trainable(self.model, best.best_trainable)
        if not (final or self.history):
            return metrics
        metrics |= self.score(self.sets.eval, "eval", final)
        for name, split in self.sets.extras.items():
            metrics |= self.score(split, f"eval_{name}", final)
        value = metrics[f"eval/{primary}"]
        if is_better(primary, value, best.best):
            best.best = value
        return metrics | {f"eval/best_{primary}": best.best}

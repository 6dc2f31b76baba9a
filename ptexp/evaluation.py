"""The loss every method trains on, and evaluation with its metrics (loss, accuracy, macro-F1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ptexp.data import Collator, EncodedSplit
from ptexp.devices import autocast, split_batch
from ptexp.distributed import Dist


def batch_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """The loss of a batch's float32 logits: cross-entropy, ``reduction`` "mean" or "sum" over the rows."""
    return F.cross_entropy(logits, labels, reduction=reduction)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    data: EncodedSplit,
    batch_size: int,
    collate: Collator,
    device,
    dist: Dist | None = None,
    amp: torch.dtype | None = None,
) -> dict:
    """Loss, accuracy and macro-F1 over ``data``; rows sorted by length so batches carry little padding.

    Under torchrun each rank evaluates every ``world``-th of those batches (the very batches a single process
    would form), and the predictions and loss sums are gathered, so every rank returns the whole set's metrics.
    ``amp``: the autocast dtype the run trains with."""
    dist = dist or Dist()
    model.eval()
    order = sorted(range(len(data)), key=lambda i: len(data.input_ids[i]))
    starts = list(range(0, len(order), batch_size))[dist.rank :: dist.world]
    loss_sum, predictions, labels = 0.0, [], []
    for start in starts:
        inputs, batch_labels = split_batch(collate([data[i] for i in order[start : start + batch_size]]), device)
        with autocast(amp, device):
            logits = model(**inputs)
        logits = logits.float()
        loss_sum += batch_loss(logits, batch_labels, "sum").item()
        predictions += logits.argmax(-1).tolist()
        labels += batch_labels.tolist()
    if dist.enabled:
        parts = dist.gather((loss_sum, predictions, labels))
        loss_sum = sum(part[0] for part in parts)
        predictions = [p for part in parts for p in part[1]]
        labels = [y for part in parts for y in part[2]]
    return {
        "eval/loss": loss_sum / len(labels),
        "eval/accuracy": sum(p == y for p, y in zip(predictions, labels, strict=True)) / len(labels),
        "eval/macro_f1": macro_f1(predictions, labels),
    }


def macro_f1(predictions: list[int], labels: list[int]) -> float:
    scores = []
    for c in sorted(set(labels) | set(predictions)):
        tp = sum(p == c and y == c for p, y in zip(predictions, labels, strict=True))
        predicted, actual = predictions.count(c), labels.count(c)
        scores.append(2 * tp / (predicted + actual) if predicted + actual else 0.0)
    return sum(scores) / len(scores)

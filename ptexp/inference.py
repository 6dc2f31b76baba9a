"""Inference cost: how fast the trained model serves, at a fixed batch size.

After the final evaluation the trainer times ``trainer.infer_batches`` batches of ``trainer.infer_batch_size`` rows of
the eval split, taken in the split's own order (wrapping around a short split) after one untimed warm-up batch,
each through the evaluation's own forward (:func:`~ptexp.evaluation.forward_batch`: collated and padded to its
longest row, eval mode, no autograd, the run's autocast). A method whose PEFT adapter folds into the weights (LoRA,
IA3) is timed a second time merged, on a merged copy: the model that is saved, and the metrics already computed,
stay as trained. The peak memory is read before, so the copy does not count in ``memory/peak_mb``.
"""

from __future__ import annotations

import copy
import time

import torch
from peft import PeftModel
from torch import nn

from ptexp.data import Collator, EncodedSplit
from ptexp.distributed import Dist
from ptexp.evaluation import forward_batch
from ptexp.loop import TrainJob


def merged_copy(model: nn.Module) -> nn.Module | None:
    """A copy of ``model`` whose PEFT adapter is folded into the backbone's weights (``merge_and_unload``), or None
    where there is none that folds (full fine-tuning, prefix and prompt tuning, BitFit, the linear probe)."""
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, PeftModel) or not hasattr(backbone.base_model, "merge_and_unload"):
        return None
    merged = copy.deepcopy(model)
    merged.backbone = merged.backbone.merge_and_unload()
    return merged


@torch.inference_mode()
def seconds_per_batch(
    model: nn.Module, data: EncodedSplit, rows: list[list[int]], collate: Collator, device, amp: torch.dtype | None
) -> float:
    """The mean wall seconds of a forward over each row list of ``rows`` but the first (the warm-up)."""
    model.eval()
    timed = 0.0
    for index, batch in enumerate(rows):
        started = time.perf_counter()
        forward_batch(model, data, batch, collate, device, amp)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if index:
            timed += time.perf_counter() - started
    return timed / max(len(rows) - 1, 1)


def inference_cost(
    model: nn.Module,
    data: EncodedSplit,
    *,
    batch_size: int,
    batches: int,
    collate: Collator,
    device: torch.device,
    amp: torch.dtype | None = None,
    dist: Dist | None = None,
) -> dict[str, float]:
    """``infer/batch_size``, ``infer/examples_per_s`` and ``infer/ms_per_example`` (and ``infer/merged_*`` where
    :func:`merged_copy` gives a model); nothing for ``batches`` = 0. Under torchrun every rank times its own replica
    and the figures are the mean over the ranks."""
    if not batches or not len(data):
        return {}
    rows = [[(b * batch_size + i) % len(data) for i in range(batch_size)] for b in range(batches + 1)]
    times = {"infer/": seconds_per_batch(model, data, rows, collate, device, amp)}
    merged = merged_copy(model)
    if merged is not None:
        times["infer/merged_"] = seconds_per_batch(merged, data, rows, collate, device, amp)
        del merged
    dist = dist or Dist()
    means = [value / dist.world for value in dist.sum(list(times.values()))]
    cost = {"infer/batch_size": float(batch_size)}
    for name, seconds in zip(times, means, strict=True):
        seconds = max(seconds, 1e-9)
        cost |= {f"{name}examples_per_s": batch_size / seconds, f"{name}ms_per_example": 1000 * seconds / batch_size}
    return cost


def log_inference_cost(model: nn.Module, data: EncodedSplit, job: TrainJob, step: int) -> dict[str, float]:
    """:func:`inference_cost` with the run's ``trainer.infer_batch_size`` and ``trainer.infer_batches``, on the
    run's device and autocast, logged at ``step`` (the last)."""
    t = job.cfg.trainer
    cost = inference_cost(
        model,
        data,
        batch_size=t.infer_batch_size,
        batches=t.infer_batches,
        collate=job.collate,
        device=job.device,
        amp=job.amp,
        dist=job.dist,
    )
    job.tracker.log_metrics(cost, step)
    return cost

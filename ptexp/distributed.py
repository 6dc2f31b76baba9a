"""One run on several processes (torchrun): DistributedDataParallel; rank 0 logs and writes."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from ptexp.data import Collator, EncodedSplit
from ptexp.devices import pick_device, split_batch
from ptexp.errors import UserError
from ptexp.store import holds_only_hydra_files


@dataclass
class StepTotals:
    """One training step over every rank: the mean loss of the global batch, its token counts, the stop votes."""

    loss: float
    real_tokens: int
    padded_tokens: int
    stop: bool  # a stop request reached some rank by the time of the step's sum


class Dist:
    """This process's place in a torchrun job, and the few collectives the trainer needs. Without torchrun (or
    with one process) it is world 1, rank 0, and every method is a no-op that returns its input."""

    def __init__(self, world: int = 1, rank: int = 0, device: torch.device | None = None, backend: str = ""):
        self.world, self.rank, self.device, self.backend = world, rank, device, backend

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over the ranks (float64, so token and row counts stay exact)."""
        if not self.enabled:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(tensor)
        return tensor.tolist()

    def max(self, value: float) -> float:
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return tensor.item()

    def broadcast(self, value):
        """Rank 0's ``value`` on every rank (any picklable object)."""
        if not self.enabled:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value) -> list:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.enabled:
            return [value]
        out: list = [None] * self.world
        torch.distributed.all_gather_object(out, value)
        return out

    def share(self, indices: list[int]) -> tuple[list[int], float]:
        """This rank's rows of a global batch, ``rank::world``, and their weight. A rank left without rows (fewer
        rows than ranks) takes the first row with weight 0, which keeps it in DDP's gradient sync. World 1: every
        row, weight 1."""
        if not self.enabled:
            return indices, 1.0
        mine = indices[self.rank :: self.world]
        if not mine:
            return indices[:1], 0.0
        return mine, 1.0

    def rank_loss(
        self, loss_of: Callable[[str], torch.Tensor], weight: float, global_rows: int
    ) -> tuple[torch.Tensor, float]:
        """(the loss this rank back-propagates, the value of it that :meth:`step_totals` sums); ``loss_of(reduction)``
        is the loss of this rank's rows. World 1: the batch's mean loss. Under torchrun: the rows' loss sum times
        ``world / global rows``: DDP averages the gradients over the ranks (world * share of the mean / world), so
        the result is the gradient of the mean over the global batch, as on one process."""
        if not self.enabled:
            loss = loss_of("mean")
            return loss, loss.item()
        loss_sum = loss_of("sum") * weight
        return loss_sum * (self.world / global_rows), loss_sum.item()

    def step_totals(self, loss: float, mask: torch.Tensor, weight: float, global_rows: int, stop: bool) -> StepTotals:
        """The step's loss (the mean over the global batch), its real and padded token counts, and whether a stop
        request reached any rank: under torchrun, summed over the ranks in one collective."""
        if not self.enabled:
            return StepTotals(loss, int(mask.sum()), mask.numel(), stop)
        totals = self.sum([loss, weight * float(mask.sum()), weight * mask.numel(), float(stop)])
        return StepTotals(totals[0] / global_rows, int(totals[1]), int(totals[2]), totals[3] > 0)

    def decide(self, fn):
        """``fn()`` on rank 0 only; every rank returns its result, or raises its error (a UserError as such), so
        that a mistake stops all ranks at once instead of leaving them waiting for rank 0."""
        if not self.enabled:
            return fn()
        outcome, error = None, None
        if self.main:
            try:
                outcome = ("ok", fn())
            except UserError as err:
                outcome, error = ("user", str(err)), err
            except Exception as err:
                outcome, error = ("fail", f"rank 0 failed: {type(err).__name__}: {err}"), err
        kind, value = self.broadcast(outcome)
        if error is not None:
            raise error
        if kind == "user":
            raise UserError(value)
        if kind == "fail":
            raise RuntimeError(value)
        return value


def torchrun_world() -> int:
    """The number of processes torchrun started for this run (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@contextlib.contextmanager
def distributed(cfg: DictConfig) -> Iterator[Dist]:
    """Under torchrun (``WORLD_SIZE`` > 1): one process group for the run (NCCL on CUDA, gloo on CPU; collectives
    time out after ``trainer.dist_timeout_s``), destroyed at the end. Otherwise a single-process :class:`Dist`."""
    world = torchrun_world()
    if world <= 1:
        yield Dist()
        return
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(cfg.trainer.device, local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timeout = timedelta(seconds=cfg.trainer.dist_timeout_s)
    owned = not torch.distributed.is_initialized()
    if owned:
        torch.distributed.init_process_group(
            backend, timeout=timeout, device_id=device if device.type == "cuda" else None
        )
    try:
        yield Dist(world, rank, device, backend)
    finally:
        if owned and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def share_run_dir(dist: Dist, run_dir: Path) -> Path:
    """Every rank uses rank 0's run folder (Hydra's ``${now:}`` may differ between the processes). The folder Hydra
    made for another rank, holding only Hydra's own files, is removed."""
    chosen = Path(dist.broadcast(str(run_dir)))
    own = run_dir.is_dir() and chosen.resolve() != run_dir.resolve()
    if own and holds_only_hydra_files(run_dir):
        shutil.rmtree(run_dir, ignore_errors=True)
        with contextlib.suppress(OSError):  # its date folder, if this rank was alone in it
            run_dir.parent.rmdir()
    return chosen


def unused_trainable(model: nn.Module, train_set: EncodedSplit, collate: Collator, device: torch.device) -> bool:
    """Whether a forward + backward on one row leaves some trained parameter without a gradient (e.g. BERT's
    pooler under ``model.pooling=mean``): DistributedDataParallel then needs ``find_unused_parameters``. The RNG
    states are restored afterwards, so the probe changes nothing in the run."""
    inputs, _ = split_batch(collate([train_set[0]]), device)
    with torch.random.fork_rng(devices=[device.index] if device.type == "cuda" else []):
        model.train()
        model(**inputs).float().sum().backward()
    trained = [p for p in model.parameters() if p.requires_grad]
    unused = any(p.grad is None for p in trained)
    for p in trained:
        p.grad = None
    return unused


def wrap_for_training(
    model: nn.Module, t, dist: Dist, train_set: EncodedSplit, collate: Collator, device: torch.device
) -> nn.Module:
    """The module the training steps call: ``model`` under DistributedDataParallel (torchrun) and torch.compile
    (``trainer.compile``). Evaluation, checkpoints and adapters use ``model`` itself."""
    net = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=unused_trainable(model, train_set, collate, device),
        )
    if t.compile:
        net = torch.compile(net)
    return net

"""The training loop every method shares: shuffle, forward, loss, backward, clip, step; log, evaluate, checkpoint.

:func:`train` reads top to bottom. A step (:meth:`Loop.train_step`) is one code path for one process and for
torchrun (:class:`~ptexp.distributed.Dist`: DDP's row share, loss weights and sums; no-ops at world size 1).
Logging, evaluation, checkpoints and the stop vote are small hooks of :class:`Loop`; its counters: :class:`LoopState`.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn
from tqdm.auto import tqdm

from ptexp.checkpoint import restore, rng_states, save_checkpoint, set_rng_states
from ptexp.data import Collator, EncodedSplit, make_batches
from ptexp.devices import autocast, fused_optimizer, peak_memory_mb, split_batch
from ptexp.distributed import Dist, StepTotals, wrap_for_training
from ptexp.encoding import planned_steps
from ptexp.errors import TrainingDiverged
from ptexp.evaluation import EvalSets, Evaluator, SplitOutputs, TaskSpec, batch_loss, predict, step_line
from ptexp.methods import Training
from ptexp.optim import make_optimizer, make_scheduler
from ptexp.signals import StopSignals
from ptexp.tracking import NullTracker, RunTracker


@dataclass
class LoopState:
    """The loop's counters: what a checkpoint saves besides weights, optimizer, scheduler and RNGs, as a dict with
    these keys (``asdict``; ``LoopState(**saved)`` resumes). ``epoch_rng`` is the data generator's state when the
    current epoch began; ``position`` counts its batches done."""

    step: int = 0
    epoch: int = 0
    position: int = 0
    epoch_rng: torch.Tensor | None = None
    samples: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    window_loss: float = 0.0
    window_steps: int = 0
    best: float | None = None  # the primary metric's best on the eval split (optimistic: picked on what it reports)
    elapsed_s: float = 0.0  # wall time of the loop (evaluations included), over every process that ran it
    eval_s: float = 0.0
    metrics_bytes: int | None = None  # metrics.jsonl's size at the checkpoint (a resume cuts it back to that)
    selection_best: float | None = None  # the primary metric's best on the selection split, at selection_best_step
    selection_best_step: int = 0
    best_trainable: dict[str, torch.Tensor] | None = None  # trainer.select_best: the trainable tensors at that step


@dataclass
class TrainJob:
    """How :func:`train` runs: the config, where it logs (a RunTracker or NullTracker), the device, and, for a
    tracked run, where it checkpoints (``run_dir``; None: never), the checkpoint it resumes (``resume``), the
    signals that stop it, the checkpoint's ``meta``, the processes (``dist``), the autocast dtype (``amp``) and
    the task's metrics (``spec``; None: from ``cfg.data``) and the method's part in the loop (``training``). The final
    evaluation leaves each eval split's outputs in ``predictions``, by prefix (``eval``, ``eval_NAME``)."""

    cfg: DictConfig
    tracker: RunTracker | NullTracker
    device: torch.device
    collate: Collator
    run_dir: Path | None = None
    resume: dict | None = None
    stop: StopSignals = field(default_factory=StopSignals)
    meta: dict = field(default_factory=dict)
    dist: Dist = field(default_factory=Dist)
    amp: torch.dtype | None = None
    spec: TaskSpec | None = None
    predictions: dict[str, SplitOutputs] = field(default_factory=dict)
    training: Training = field(default_factory=Training)


def train(model: nn.Module, train_set: EncodedSplit, evals: EvalSets | EncodedSplit, job: TrainJob) -> dict[str, float]:
    """Train ``model``; returns the final eval metrics with the run's summary (time, throughput, memory, steps).

    It checkpoints every ``trainer.checkpoint_every`` steps, at each epoch end and when ``job.stop`` caught
    SIGINT/SIGTERM (then it raises :class:`~ptexp.signals.Interrupted`).

    Under torchrun every rank draws the same global batches (``trainer.batch_size`` rows) from the same seeded
    generator and trains on its share, rows ``rank::world`` (:meth:`Dist.share`, :meth:`Dist.rank_loss`). Loss,
    token counts and the stop request are summed over the ranks at every step; rank 0 logs and checkpoints.
    """
    evals = evals if isinstance(evals, EvalSets) else EvalSets(evals)
    loop = Loop(model, train_set, evals, job)  # optimizer, schedule, data order; the checkpoint's, if resuming
    state, stop = loop.state, job.stop
    with stop.deferred():  # in the loop, SIGINT/SIGTERM wait for the end of the step, then checkpoint and stop
        while state.step < loop.total_steps:
            loop.begin_epoch()
            for index, indices in enumerate(loop.batches):
                if index < state.position:
                    continue  # consumed before the interruption
                totals = loop.train_step(indices)
                loop.count(index, len(indices), totals)
                loop.log_on_schedule()
                loop.evaluate_on_schedule()
                stopping = loop.stop_vote(totals)
                loop.checkpoint_on_schedule(stopping)
                if stopping:
                    stop.check()
                if state.step >= loop.total_steps:
                    break
            loop.end_epoch()
    return loop.finish()


def check_finite(loss: float, step: int, cfg: DictConfig) -> None:
    if not math.isfinite(loss):
        raise TrainingDiverged(
            f"loss became {loss} at step {step} (optimizer.lr={cfg.optimizer.lr}); "
            "lower optimizer.lr or set trainer.grad_clip"
        )


class Loop:
    """What the loop works with, built once (in this order, for the same random numbers as ever): the data order,
    the optimizer and schedule, the state (restored when resuming), the training module, the progress bar."""

    def __init__(self, model: nn.Module, train_set: EncodedSplit, evals: EvalSets, job: TrainJob):
        cfg, dist, device = job.cfg, job.dist, job.device
        self.model, self.train_set, self.job, self.t = model, train_set, job, cfg.trainer
        self.spec = job.spec or TaskSpec.of(cfg.data)
        self.evaluator = Evaluator(model, evals, self.spec, self.evaluate_split, kept=job.predictions,
                                   select_best=bool(self.t.select_best), history=bool(self.t.eval_history))  # fmt: skip
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.batches = make_batches(train_set, self.t, self.generator)
        self.total_steps = planned_steps(len(train_set), self.t)
        self.optimizer = make_optimizer(model, cfg.optimizer, fused=fused_optimizer(cfg.optimizer, device))
        self.scheduler = make_scheduler(self.optimizer, cfg.optimizer, self.total_steps)
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.state = LoopState(epoch_rng=self.generator.get_state())
        if job.resume is not None:
            self.state = LoopState(**restore(job.resume, model, self.optimizer, self.scheduler, job.training))
            self.generator.set_state(self.state.epoch_rng)
            ranks = job.resume.get("rng_ranks") or []
            set_rng_states(ranks[dist.rank] if len(ranks) == dist.world else job.resume["rng"])
        elif dist.rank > 0:
            torch.manual_seed(cfg.seed + 1_000_003 * dist.rank)  # dropout masks of its own on every rank
        self.net = wrap_for_training(model, self.t, dist, train_set, job.collate, device)
        self.window_samples, self.clock, self.window_start = 0, time.perf_counter(), time.perf_counter()
        show = self.t.progress and dist.main
        self.bar = tqdm(
            total=self.total_steps, initial=self.state.step, desc=cfg.method.name, disable=not show, file=sys.stderr
        )

    def train_step(self, indices: list[int]) -> StepTotals:
        """One optimizer step on the global batch ``indices``: this rank's share forward, the loss, the sums over
        the ranks (loss, tokens, stop votes), the finite check, backward, clip, step."""
        job, dist = self.job, self.job.dist
        rows, weight = dist.share(indices)
        inputs, labels = split_batch(job.collate([self.train_set[i] for i in rows]), job.device, non_blocking=True)
        self.net.train()
        with autocast(job.amp, job.device):
            logits = self.net(**inputs)
        logits = logits.float()
        task = self.spec.task
        loss, rank_value = dist.rank_loss(
            lambda reduction: batch_loss(logits, labels, task, reduction), weight, len(indices)
        )
        loss = loss + job.training.extra_loss()  # a method's regulariser; train/loss logs the task's
        # a signal after this sum stops the next step
        totals = dist.step_totals(rank_value, inputs["attention_mask"], weight, len(indices), job.stop.requested)
        check_finite(totals.loss, self.state.step + 1, job.cfg)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.t.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.t.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        job.training.after_step(self.state.step + 1)
        return totals

    def begin_epoch(self) -> None:
        if self.state.position == 0:  # a new epoch; else a resumed one, whose generator state was restored
            self.state.epoch += 1
            self.state.epoch_rng = self.generator.get_state()

    def count(self, index: int, rows: int, totals: StepTotals) -> None:
        s = self.state
        s.step += 1
        s.position = index + 1
        s.samples += rows
        s.real_tokens += totals.real_tokens
        s.padded_tokens += totals.padded_tokens
        s.window_loss += totals.loss
        s.window_steps += 1
        self.window_samples += rows
        self.bar.update(1)

    def log_on_schedule(self) -> None:
        """Every ``trainer.log_every`` steps and at the last: the mean train loss of the window, lr, speed, epoch."""
        s, step = self.state, self.state.step
        if step % self.t.log_every and step != self.total_steps:
            return
        speed = self.window_samples / max(time.perf_counter() - self.window_start, 1e-9)
        mean_loss = s.window_loss / s.window_steps
        self.job.tracker.log_metrics(
            {
                "train/loss": mean_loss,
                "train/lr": self.scheduler.get_last_lr()[0],
                "train/samples_per_s": speed,
                "train/epoch": s.epoch,
            },
            step,
        )
        self.bar.set_postfix(loss=f"{mean_loss:.4f}", samples_per_s=f"{speed:.1f}")
        s.window_loss, s.window_steps, self.window_samples = 0.0, 0, 0
        self.window_start = time.perf_counter()

    def evaluate_on_schedule(self) -> None:
        """Every ``trainer.eval_every`` steps but the last (the final evaluation comes after the loop)."""
        step = self.state.step
        if self.t.eval_every and step % self.t.eval_every == 0 and step < self.total_steps:
            self.evaluate(step)
            self.window_start = time.perf_counter()  # the train speed leaves the evaluation out

    def evaluate(self, at_step: int, final: bool = False) -> dict[str, float]:
        """Every eval split (and the selection split) at ``at_step``, logged and printed (see :class:`Evaluator`)."""
        job, s = self.job, self.state
        started = time.perf_counter()
        metrics = self.evaluator.at_step(at_step, s, final)
        s.eval_s += time.perf_counter() - started
        job.tracker.log_metrics(metrics, at_step)
        line = step_line(metrics, self.spec)
        if job.dist.main and line:  # no line where no split was scored (eval_history off, no selection split)
            self.bar.write(f"[ptexp] step {at_step}: {line}")
        return metrics

    def evaluate_split(self, split: EncodedSplit) -> SplitOutputs:
        job = self.job
        return predict(self.model, split, self.t.eval_batch_size, job.collate, job.device, job.dist, job.amp, self.spec)

    def checkpoint_on_schedule(self, stopping: bool) -> None:
        if stopping or (self.t.checkpoint_every and self.state.step % self.t.checkpoint_every == 0):
            self.checkpoint()

    def checkpoint(self) -> None:
        """Add the time since the last one to ``elapsed_s``; with a run folder, save (rank 0, every rank's RNGs)."""
        job, s = self.job, self.state
        s.elapsed_s, self.clock = s.elapsed_s + time.perf_counter() - self.clock, time.perf_counter()
        if job.run_dir is None:
            return
        rng_ranks = job.dist.gather(rng_states()) if job.dist.enabled else None  # every rank's, for an exact resume
        if job.dist.main:
            metrics_file = job.tracker.metrics_file
            s.metrics_bytes = metrics_file.stat().st_size if metrics_file.exists() else 0
            meta = {**job.meta, "run_id": job.tracker.run_id, "world_size": job.dist.world}
            method = job.training.state_dict()
            save_checkpoint(job.run_dir, self.model, self.optimizer, self.scheduler, asdict(s), meta, rng_ranks, method)

    def stop_vote(self, totals: StepTotals) -> bool:
        """Whether to checkpoint and stop after this step. One process: whether a signal came by now. Under
        torchrun: the vote summed with the step, so that every rank stops at the same step."""
        if not self.job.dist.enabled:
            return self.job.stop.requested
        return self.agree_to_stop(totals.stop)

    def agree_to_stop(self, any_rank: bool) -> bool:
        """``any_rank``: whether SIGINT/SIGTERM reached any rank; one signalled late stops with the others."""
        if any_rank and not self.job.stop.requested:
            self.job.stop.signum = signal.SIGTERM  # another rank was signalled
        return any_rank

    def end_epoch(self) -> None:
        """The next epoch starts from here: evaluate (unless on a step schedule), checkpoint, stop if asked."""
        s, t, dist = self.state, self.t, self.job.dist
        s.position, s.epoch_rng = 0, self.generator.get_state()
        if not t.eval_every and s.step < self.total_steps:
            self.evaluate(s.step)
        self.checkpoint()  # at every epoch end, the last one included (a kill in the final eval resumes there)
        if self.agree_to_stop(bool(dist.sum([float(self.job.stop.requested)])[0])):
            self.job.stop.check()

    def finish(self) -> dict[str, float]:
        """The final evaluation and the run's summary, logged and returned."""
        s = self.state
        train_seconds = s.elapsed_s + time.perf_counter() - self.clock - s.eval_s
        metrics = self.evaluate(s.step, final=True)
        self.bar.close()
        summary = {
            "time/train_s": train_seconds,
            "time/eval_s": s.eval_s,
            "throughput/train_samples_per_s": s.samples / max(train_seconds, 1e-9),
            "memory/peak_mb": self.job.dist.max(peak_memory_mb(self.job.device)),  # the largest of the ranks'
            "train/steps": s.step,
            "train/epochs": s.epoch,
            "train/real_token_fraction": s.real_tokens / max(s.padded_tokens, 1),  # non-pad share of batch tokens
        }
        self.job.tracker.log_metrics(summary, s.step)
        return {**metrics, **summary}

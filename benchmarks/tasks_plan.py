"""The wall-time estimates of benchmarks/tasks.py ``--plan`` and benchmarks/peer_speed.py ``--plan``: no training.

Train-step seconds = SCALE x (padded tokens of the batch + FIXED_TOKENS). FIXED_TOKENS: MiniLM, batch 32, 2 threads,
AdamW, measured at sequence 16 (0.367 s) and 64 (1.198 s) on shared cores; SCALE so that ptexp full on the SST-2
subset (ptexp's length-grouped batches) takes the 187 s per epoch of the README's quiet-machine accuracy benchmark.
Padded tokens come from the samplers themselves on ptexp's rows (:func:`common.epoch_padding`).
"""

from __future__ import annotations

import argparse

from common import epoch_padding, token_lengths
from tasks import (
    LONGER,
    MAIN_METHODS,
    PEERS,
    RUN_GLUE,
    TASKS,
    TIME_SHARE,
    grid,
    method_epochs,
    selection_rows,
    task_data,
)

FIXED_TOKENS = 170
# Per-epoch train time relative to full fine-tuning (README, accuracy benchmark on SST-2).
METHOD_COST = {"full": 1.0, "prefix": 0.56, "lora": 0.60, "ia3": 0.58, "bitfit": 0.60, "prompt": 1.20,
               "linear_probe": 0.038}  # fmt: skip
EVAL_COST, START_S = 1 / 3, 20  # an evaluated token against a trained one; start-up seconds per run


def step_scale() -> float:
    """SCALE: seconds per (padded token + FIXED_TOKENS per step) of a full fine-tuning epoch."""
    tokens, steps = epoch_padding(token_lengths(task_data("sst2", 20000, None))["train"], 32, "ptexp")
    print(f"seconds per step = {187 / (tokens + FIXED_TOKENS * steps) * 1e3:.3f} ms x (padded tokens + {FIXED_TOKENS})")
    return 187 / (tokens + FIXED_TOKENS * steps)


def epoch_seconds(lengths: list[int], sampler: str, scale: float, batch_size: int = 32) -> float:
    """Estimated train seconds of one full fine-tuning epoch over rows of these token lengths, batched by
    ``sampler`` (common.SAMPLERS)."""
    tokens, steps = epoch_padding(lengths, batch_size, sampler)
    return scale * (tokens + FIXED_TOKENS * steps)


def plan(args: argparse.Namespace) -> None:
    """Estimated wall time of benchmarks/tasks.py for this invocation's settings."""
    scale, total = step_scale(), 0.0
    for name in args.tasks:
        lengths = token_lengths(task_data(name, args.train_rows or TASKS[name].train_rows, selection_rows(name, args)))
        epoch = epoch_seconds(lengths["train"], "ptexp", scale)
        evals = scale * EVAL_COST * (sum(lengths["eval"]) + sum(lengths.get("selection", [])))
        runs = {m: len(grid(m, args)) + args.seeds - 1 if m in MAIN_METHODS else args.other_seeds for m in args.methods}
        ptexp_s = sum(
            count * (START_S + (METHOD_COST[m] * epoch + evals) * method_epochs(m, args)) for m, count in runs.items()
        )
        if not (args.quick or args.max_steps):  # LONGER's second grid, each run at most TIME_SHARE x full's time
            full_s = START_S + (epoch + evals) * method_epochs("full", args)
            ptexp_s += sum(len(grid(m, args)) * TIME_SHARE * full_s for m in LONGER if m in args.methods)
        peer_s = 0.0
        for peer in PEERS.values():  # full's recipe: --epochs (its chosen epochs are not known yet), evaluated
            epochs = args.epochs if peer.full_recipe else args.peer_epochs or RUN_GLUE["trainer.epochs"]
            sampler = "trainer" if peer.grouped else "random"
            scored = epochs if peer.full_recipe else 1  # the selection split each epoch, or the dev split once
            each = epochs * epoch_seconds(lengths["train"], sampler, scale) + scored * evals
            peer_s += args.peers * args.seeds * (START_S + each)
        total += ptexp_s + peer_s
        print(f"  {name}: ptexp full epoch ~{epoch:.0f} s; ptexp ~{ptexp_s / 60:.0f} min, peer ~{peer_s / 60:.0f} min")
    print(f"estimate on 2 quiet cores: ~{total / 3600:.1f} h")

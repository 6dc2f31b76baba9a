"""Scaling: train and inference time against sequence length and batch size, for full fine-tuning, prefix tuning
(P=20) and LoRA, so that a user can predict the cost of their own task.

Everything goes through ptexp's own code: the model, tokenizer and fast dropout as the trainer builds them for a run
(``ptexp.trainer.build``), the trainer's optimizer step (``ptexp.loop.Loop.train_step``: forward, loss, backward,
clip, fused AdamW) and the inference timing that every run logs (``ptexp.inference``; LoRA merged too). The rows
are random tokens, every row exactly the sequence length (no padding), so a cell's cost depends on the method, the
length and the batch size alone. Each method runs in a process of its own (nothing warm shared between rivals).

    python benchmarks/scaling.py                                  # MiniLM; lengths 64 128 256 512; batches 8 32
    python benchmarks/scaling.py --model tiny --lengths 16 32 --batches 2 --steps 1 --infer-batches 1   # smoke

Prints a Markdown table (train ms per step and per example, inference ms per example) and writes
``scaling.json`` and ``scaling.png`` (ms per example against sequence length, log-log; training left, inference
right; a line per method and batch size) to ``--out`` (default ``outputs/benchmarks``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import ROOT, composed, markdown_table

METHODS = ("full", "prefix", "lora")


@dataclass
class Bench:
    """One method as the trainer builds it for a run, and what its steps and batches need."""

    cfg: Any  # the composed config (DictConfig)
    model: Any  # torch.nn.Module
    collate: Any  # ptexp.data.Collator
    device: Any  # torch.device
    amp: Any  # the autocast dtype, or None
    folder: Path
    training: Any  # the method's part in the loop (ptexp.methods.Training)


def build_method(method: str, args: argparse.Namespace, folder: Path) -> Bench:
    """``method`` on ``args.model``, built by the trainer's own code (``set_up_torch``, ``build``)."""
    from ptexp.data import Collator
    from ptexp.distributed import Dist
    from ptexp.experiment import prepare_config
    from ptexp.trainer import build, set_up_torch

    overrides = [f"method={method}", f"model={args.model}", f"output_root={folder}", f"trainer.threads={args.threads}"]
    overrides += ["trainer.progress=false", f"trainer.max_steps={args.steps + 1}"]
    if method == "prefix":
        overrides.append(f"prefix_length={args.prefix_length}")
    cfg = composed(overrides)
    prepare_config(cfg)
    device, amp, _ = set_up_torch(cfg, Dist())
    built, _, _, training = build(cfg, device, None, folder)
    return Bench(cfg, built.model, Collator(built.tokenizer.pad_token_id), device, amp, folder, training)


def random_split(rows: int, length: int, vocab: int):
    """``rows`` rows of ``length`` random token ids (no padding), labels 0 and 1 in turn."""
    import torch

    from ptexp.encoding import EncodedSplit

    ids = torch.randint(1000, vocab, (rows, length)).tolist()
    return EncodedSplit(input_ids=ids, labels=[i % 2 for i in range(rows)])


def train_seconds(bench: Bench, split, batch: int, steps: int) -> float:
    """The median seconds of ``steps`` optimizer steps of the trainer's loop on ``batch`` rows, after a warm-up."""
    import torch

    from ptexp.evaluation import EvalSets
    from ptexp.loop import Loop, TrainJob
    from ptexp.tracking import NullTracker

    job = TrainJob(bench.cfg, NullTracker(bench.folder), bench.device, bench.collate, amp=bench.amp,
                   training=bench.training)  # fmt: skip
    loop = Loop(bench.model, split, EvalSets(split), job)  # a fresh optimizer and schedule
    times = []
    for step in range(steps + 1):
        started = time.perf_counter()
        loop.train_step([(step * batch + i) % len(split) for i in range(batch)])
        if bench.device.type == "cuda":
            torch.cuda.synchronize(bench.device)
        times.append(time.perf_counter() - started)
    loop.bar.close()
    return statistics.median(times[1:])


def infer_seconds(bench: Bench, split, batch: int, batches: int) -> tuple[float, float | None]:
    """Mean seconds per inference batch after a warm-up, unmerged and (LoRA) merged, by ptexp's inference timing."""
    from ptexp.inference import merged_copy, seconds_per_batch

    rows = [[b * batch + i for i in range(batch)] for b in range(batches + 1)]
    unmerged = seconds_per_batch(bench.model, split, rows, bench.collate, bench.device, bench.amp)
    merged = merged_copy(bench.model)
    if merged is None:
        return unmerged, None
    return unmerged, seconds_per_batch(merged, split, rows, bench.collate, bench.device, bench.amp)


def worker(args: argparse.Namespace) -> list[dict]:
    """Every (length, batch) cell of one method, in this process."""
    cells = []
    with tempfile.TemporaryDirectory() as tmp:
        bench = build_method(args.method, args, Path(tmp))
        vocab = getattr(getattr(bench.model, "config", None), "vocab_size", 30522)
        for length in args.lengths:
            for batch in args.batches:
                split = random_split(batch * (max(args.steps, args.infer_batches) + 1), length, vocab)
                infer, merged = infer_seconds(bench, split, batch, args.infer_batches)
                train = train_seconds(bench, split, batch, args.steps)
                cell = {"method": args.method, "length": length, "batch": batch, "train_ms_per_step": 1000 * train}
                cell |= {"train_ms_per_example": 1000 * train / batch, "infer_ms_per_example": 1000 * infer / batch}
                cell["merged_ms_per_example"] = None if merged is None else 1000 * merged / batch
                print(json.dumps(cell), file=sys.stderr, flush=True)
                cells.append(cell)
    return cells


def run_method(method: str, args: argparse.Namespace) -> list[dict]:
    """One method's cells, measured in a fresh process (``--worker``)."""
    command = [sys.executable, __file__, "--worker", "--method", method, "--model", args.model]
    command += ["--lengths", *map(str, args.lengths), "--batches", *map(str, args.batches)]
    command += ["--steps", str(args.steps), "--infer-batches", str(args.infer_batches)]
    command += ["--prefix-length", str(args.prefix_length), "--threads", str(args.threads)]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{method}: the worker failed\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


PANELS = {"training": "train_ms_per_example", "inference": "infer_ms_per_example"}


def series(cells: list[dict], key: str) -> dict[tuple[str, int], tuple[list[int], list[float]]]:
    """(label, batch) -> (lengths, values of ``key``) for each method and batch size, in length order; for the
    inference panel also LoRA merged ("lora merged")."""
    out: dict[tuple[str, int], tuple[list[int], list[float]]] = {}
    keys = [(key, "")] + ([("merged_ms_per_example", " merged")] if key == PANELS["inference"] else [])
    for cell in sorted(cells, key=lambda c: c["length"]):
        for field, suffix in keys:
            if cell[field] is not None:
                lengths, values = out.setdefault((cell["method"] + suffix, cell["batch"]), ([], []))
                lengths.append(cell["length"])
                values.append(cell[field])
    return out


def plot(cells: list[dict], path: Path, title: str) -> None:
    """ms per example against sequence length, log-log: training left, inference right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    colors = {"full": "tab:blue", "prefix": "tab:orange", "lora": "tab:green", "lora merged": "tab:olive"}
    batches = sorted({c["batch"] for c in cells})
    dashes = {b: ("-", "--", ":", "-.")[i % 4] for i, b in enumerate(batches)}
    lengths = sorted({c["length"] for c in cells})
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharex=True)
    for ax, (name, key) in zip(axes, PANELS.items(), strict=True):
        for (label, batch), (x, y) in series(cells, key).items():
            ax.plot(x, y, dashes[batch], marker="o", color=colors[label], label=f"{label}, batch {batch}")
        ax.set(yscale="log", xlabel="sequence length (tokens)", ylabel="ms per example", title=name)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(lengths, [str(n) for n in lengths])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--model", default="minilm", help="a conf/model option (tiny for a smoke run)")
    parser.add_argument("--lengths", nargs="+", type=int, default=[64, 128, 256, 512])
    parser.add_argument("--batches", nargs="+", type=int, default=[8, 32])
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps per cell, after one warm-up")
    parser.add_argument("--infer-batches", type=int, default=5, help="timed inference batches, after one warm-up")
    parser.add_argument("--prefix-length", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "benchmarks")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    started = time.strftime("%Y-%m-%d %H:%M")
    cells = [cell for method in args.methods for cell in run_method(method, args)]
    headers = ["method", "length", "batch", "train ms/step", "train ms/example", "infer ms/example", "merged ms/ex"]
    rows = [
        [c["method"], c["length"], c["batch"], fmt(c["train_ms_per_step"]), fmt(c["train_ms_per_example"]),
         fmt(c["infer_ms_per_example"]), fmt(c["merged_ms_per_example"])]
        for c in cells
    ]  # fmt: skip
    title = f"{args.model}, {args.threads} threads, {started}"
    print(f"Scaling ({title}; train: median of {args.steps} steps; inference: mean of {args.infer_batches} batches)")
    print(markdown_table(headers, rows))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scaling.json").write_text(json.dumps({"title": title, "cells": cells}, indent=1))
    plot(cells, args.out / "scaling.png", f"ms per example against sequence length ({title})")
    print(f"wrote {args.out / 'scaling.json'} and {args.out / 'scaling.png'}")


if __name__ == "__main__":
    main()

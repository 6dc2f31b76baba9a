"""The optimizer (weight decay on matrices only) and the learning-rate schedule of ``optimizer.*``."""

from __future__ import annotations

import math

import torch
import transformers
from torch import nn

from ptexp.config import OptimizerConfig, OptimizerName, Schedule


def make_optimizer(model: nn.Module, cfg: OptimizerConfig, fused: bool = False) -> torch.optim.Optimizer:
    """Weight decay on matrices only (not on biases or LayerNorm weights). ``fused``: Adam(W)'s fused kernel."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    if cfg.name == OptimizerName.sgd:
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    kind = torch.optim.AdamW if cfg.name == OptimizerName.adamw else torch.optim.Adam
    extra = {"fused": True} if fused else {}
    return kind(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, **extra)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimizerConfig, total_steps: int):
    """Linear warm-up over ``warmup_ratio`` of the steps, then linear decay to zero or constant."""
    warmup = math.ceil(cfg.warmup_ratio * total_steps)
    if cfg.schedule == Schedule.constant:
        return transformers.get_constant_schedule_with_warmup(optimizer, warmup)
    return transformers.get_linear_schedule_with_warmup(optimizer, warmup, total_steps)

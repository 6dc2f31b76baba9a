"""Dropout for CPU training from 16-bit random integers: the same keep-or-zero-and-scale rule as ``nn.Dropout``.

torch's CPU generator (mt19937) yields 32 random bits per call, and ``nn.Dropout`` (like the dropout inside
``scaled_dot_product_attention``) spends one call plus a float conversion per element. On this project's 2-core
CPU that made dropout about an eighth of a MiniLM training step. Here one 64-bit draw serves four elements: each
element is kept when its 16-bit integer is at or above a threshold, so the drop probability is ``p`` rounded to a
multiple of 2^-16 (0.1 becomes 0.1000061). Kept values are scaled by 1 / (1 - p), as in ``nn.Dropout``. The bits
come from torch's default generator, so ``seed`` still makes runs repeatable.

``use_fast_dropout(model)`` swaps every ``nn.Dropout`` for ``FastDropout`` and, for SDPA attention, routes the
attention-probability dropout through ``attention`` below. Only the trainer's CPU runs use it
(``trainer.fast_dropout``); on CUDA torch's Philox dropout is already cheap.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTENTION = "ptexp_sdpa_fast_dropout"
_LEVELS = 2**16


def keep_mask(shape: torch.Size, p: float, device: torch.device | None = None) -> torch.Tensor:
    """A boolean mask of ``shape``: each element True (kept) with probability 1 - round(p * 2^16) / 2^16."""
    count = math.prod(shape)
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), None)  # all 64 bits
    halves = words.view(torch.int16)[:count].view(shape)  # uniform over -2^15 .. 2^15 - 1
    return halves >= -(2**15) + round(p * _LEVELS)


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        keep = keep_mask(x.shape, p, x.device)
        ctx.save_for_backward(keep)
        ctx.scale = 1.0 / (1.0 - p)
        return x.mul(keep).mul_(ctx.scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return grad.mul(keep).mul_(ctx.scale), None


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``nn.functional.dropout(x, p, training)`` with the mask drawn by ``keep_mask``."""
    if not training or p == 0.0 or x.numel() == 0:
        return x
    if p >= 1.0:
        return x * 0.0
    return _Dropout.apply(x, p)


class FastDropout(nn.Dropout):
    """``nn.Dropout`` (same ``p``, same train/eval behaviour) drawing its mask with ``keep_mask``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training)


def attention(module: nn.Module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """Attention for ``attn_implementation=ptexp_sdpa_fast_dropout``: SDPA itself without dropout (evaluation, or
    p = 0); with dropout, the math SDPA runs on CPU in that case (scores, mask, softmax, dropout, weighted sum),
    its dropout drawn by ``keep_mask``. Returns (batch, query length, heads, head_dim), as SDPA's wrapper does."""
    if not dropout or getattr(module, "is_causal", False):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:  # SDPA's boolean mask: True = attend
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    probs = fast_dropout(torch.softmax(scores, dim=-1), dropout)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION, attention)
AttentionMaskInterface.register(ATTENTION, sdpa_mask)  # the same masks as SDPA


def use_fast_dropout(model: nn.Module) -> int:
    """Swap each ``nn.Dropout`` in ``model`` for a ``FastDropout`` with the same p, and move SDPA attention onto
    ``attention`` above. Returns how many dropout modules were swapped."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                fast = FastDropout(child.p)
                fast.train(child.training)
                setattr(parent, name, fast)
                swapped += 1
    for sub in model.modules():
        config = getattr(sub, "config", None)
        if getattr(config, "_attn_implementation", None) == "sdpa":
            config._attn_implementation = ATTENTION
    return swapped

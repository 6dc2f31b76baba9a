"""Fast dropout (ptexp/fast_dropout.py): the masks keep each element with probability 1 - p independently, kept
values and gradients are scaled like nn.Dropout's, the attention path is SDPA's math, and the trainer uses it on
CPU unless told not to."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from ptexp import trainer
from ptexp.fast_dropout import ATTENTION, FastDropout, attention, fast_dropout, keep_mask, use_fast_dropout
from ptexp.methods import build_model
from ptexp.models import SequenceClassifier, load_backbone
from ptexp.trainer import run_experiment
from tests.conftest import runs_in


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_mask_keeps_each_element_with_probability_one_minus_p(p):
    torch.manual_seed(0)
    n = 1 << 22
    keep = keep_mask(torch.Size([n // 64, 64]), p).flatten()
    q = 1 - round(p * 2**16) / 2**16
    sigma = math.sqrt(q * (1 - q) / n)
    assert abs(keep.float().mean().item() - q) < 5 * sigma
    # neighbours come from the same 64-bit draw: they must still be independent
    pairs = keep[0::2] & keep[1::2]
    assert abs(pairs.float().mean().item() - q * q) < 5 * math.sqrt(q * q * (1 - q * q) / (n // 2))
    quads = keep[0::4] & keep[3::4]
    assert abs(quads.float().mean().item() - q * q) < 5 * math.sqrt(q * q * (1 - q * q) / (n // 4))


def test_fast_dropout_zeroes_or_scales_and_its_gradient_uses_the_same_mask():
    torch.manual_seed(1)
    x = (torch.rand(64, 100) + 0.5).requires_grad_(True)  # no zeros, so the mask can be read off the output
    out = fast_dropout(x, 0.25)
    kept = out != 0
    assert 0.6 < kept.float().mean() < 0.9
    torch.testing.assert_close(out[kept], x[kept] / 0.75, rtol=0, atol=1e-6)
    (out * 3).sum().backward()
    torch.testing.assert_close(x.grad, kept.float() * 3 / 0.75)


def test_the_seed_repeats_the_masks_and_eval_or_p0_is_the_identity():
    x = torch.ones(1000)
    torch.manual_seed(7)
    first = fast_dropout(x, 0.1)
    torch.manual_seed(7)
    assert torch.equal(fast_dropout(x, 0.1), first)
    assert not torch.equal(fast_dropout(x, 0.1), first)  # the generator moved on
    assert fast_dropout(x, 0.1, training=False) is x and fast_dropout(x, 0.0) is x
    assert torch.equal(fast_dropout(x, 1.0), torch.zeros(1000))
    layer = FastDropout(0.3).eval()
    assert layer(x) is x and layer.p == 0.3


@pytest.mark.parametrize("mask_kind", ["none", "bool", "additive"])
def test_attention_with_dropout_is_sdpa_math(mask_kind):
    """With p so small that round(p * 2^16) = 0, nothing is dropped and the scale is 1 + 1e-9: the eager path
    must then equal SDPA itself."""
    torch.manual_seed(2)
    q, k, v = (torch.randn(3, 4, 5 if i == 0 else 9, 8) for i in range(3))
    mask = None
    if mask_kind != "none":
        allowed = torch.ones(3, 1, 5, 9, dtype=torch.bool)
        allowed[0, ..., 7:] = False  # padding in the first row
        allowed[2, ..., 4:] = False
        mask = allowed if mask_kind == "bool" else torch.zeros(allowed.shape).masked_fill(~allowed, -1e9)
    module = nn.Module()
    module.is_causal = False
    expected, _ = sdpa_attention_forward(module, q, k, v, mask, dropout=0.0, scaling=None)
    got, _ = attention(module, q, k, v, mask, dropout=1e-9, scaling=None)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.manual_seed(3)
    dropped, _ = attention(module, q, k, v, mask, dropout=0.5, scaling=None)
    assert dropped.shape == expected.shape and not torch.allclose(dropped, expected)


@pytest.mark.parametrize("method", ["full", "prefix"])
def test_use_fast_dropout_swaps_every_dropout_and_leaves_evaluation_bit_identical(tiny_config, method):
    cfg = tiny_config(f"method={method}")
    backbone = load_backbone(cfg.model, cfg.seed)
    model = build_model(cfg, SequenceClassifier(backbone, 2, cfg.model.pooling, cfg.model.classifier_dropout))
    ids = torch.randint(1000, 2000, (4, 7))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    model.eval()
    with torch.no_grad():
        before = model(ids, mask)
    dropouts = sum(type(m) is nn.Dropout for m in model.modules())
    assert use_fast_dropout(model) == dropouts > 0
    assert not any(type(m) is nn.Dropout for m in model.modules())
    assert backbone.config._attn_implementation == ATTENTION
    with torch.no_grad():
        assert torch.equal(model(ids, mask), before)
    model.train()
    torch.manual_seed(4)
    train_a = model(ids, mask)
    train_b = model(ids, mask)
    torch.manual_seed(4)
    assert torch.equal(model(ids, mask), train_a) and not torch.equal(train_a, train_b)
    F.cross_entropy(train_a, torch.tensor([0, 1, 0, 1])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("setting", ["null", "false"])
def test_the_trainer_uses_fast_dropout_on_cpu_unless_told_not_to(tiny_config, tmp_path, monkeypatch, setting):
    swapped = []
    monkeypatch.setattr(trainer, "use_fast_dropout", lambda model: swapped.append(use_fast_dropout(model)))
    cfg = tiny_config("method=prefix", "trainer.device=cpu", f"trainer.fast_dropout={setting}", "trainer.max_steps=2")
    run_experiment(cfg, tmp_path / "run")
    (run,) = runs_in(tmp_path / "outputs" / "mlflow.db")
    assert run.info.status == "FINISHED"
    assert run.data.tags["ptexp.fast_dropout"] == ("true" if setting == "null" else "false")
    assert len(swapped) == (1 if setting == "null" else 0) and all(n > 0 for n in swapped)

"""ptexp's prefix vs PEFT's PrefixTuning (through ptexp's ``peft_prefix`` method).

The same prefix values give the same logits, to 1e-5, on the tiny model with padding.

PEFT's prefix tuning only runs on transformers < 5.24, so in the project's own venv this test is skipped;
`make test-peft-compat` builds a second venv (transformers 4.57, PEFT 0.17) and runs it there.
PEFT shifts the real tokens' positions by P, so ptexp runs with ``prefix.shift_positions=true`` here.
"""

from __future__ import annotations

import copy

import pytest
import torch
import transformers

VERSION = tuple(int(x) for x in transformers.__version__.split(".")[:2])
pytestmark = pytest.mark.skipif(
    VERSION >= (5, 24), reason=f"PEFT prefix tuning cannot run on transformers {transformers.__version__}"
)


@pytest.mark.parametrize("length", [1, 5])
def test_ptexp_prefix_equals_peft_prefix_tuning_logits(length):
    from ptexp.methods import build_model
    from ptexp.models import SequenceClassifier, load_backbone, load_tokenizer
    from tests.conftest import make_config

    cfg = make_config(
        "model=tiny", "model.attn_implementation=eager", "model.classifier_dropout=0.0", "method=prefix",
        f"prefix_length={length}", "prefix.shift_positions=true",
    )  # fmt: skip
    backbone = load_backbone(cfg.model, seed=0).eval()
    ours = build_model(cfg, SequenceClassifier(copy.deepcopy(backbone), 2, cfg.model.pooling, 0.0)).eval()
    with torch.no_grad():
        ours.prefix_encoder.prefix.copy_(
            torch.randn(ours.prefix_encoder.prefix.shape, generator=torch.Generator().manual_seed(1))
        )

    peft_cfg = make_config(
        "model=tiny", "model.attn_implementation=eager", "model.classifier_dropout=0.0", "method=peft_prefix",
        f"prefix_length={length}",
    )  # fmt: skip
    theirs = build_model(
        peft_cfg, SequenceClassifier(backbone, 2, cfg.model.pooling, 0.0)
    ).eval()  # ptexp's peft_prefix
    peft_backbone = theirs.backbone
    # PEFT's embedding row p holds, for each (layer, key/value) in that order, the hidden-size vector.
    layers, kv, p, hidden = ours.prefix_encoder.prefix.shape
    with torch.no_grad():
        weight = ours.prefix_encoder.prefix.permute(2, 0, 1, 3).reshape(p, layers * kv * hidden)
        peft_backbone.prompt_encoder["default"].embedding.weight.copy_(weight)
    theirs.head.load_state_dict(ours.classifier.head.state_dict())

    tokenizer = load_tokenizer(cfg.model)
    enc = tokenizer(["a quietly wonderful film", "not good , not bad , just long and dull"], padding=True,
                    return_tensors="pt")  # fmt: skip
    assert bool((enc["attention_mask"] == 0).any())
    with torch.no_grad():
        a = ours(enc["input_ids"], enc["attention_mask"])
        b = theirs(enc["input_ids"], enc["attention_mask"])
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert not torch.allclose(a, ours.classifier(enc["input_ids"], enc["attention_mask"]), atol=1e-3)

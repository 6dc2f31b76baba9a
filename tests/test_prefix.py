"""Prefix tuning on the tiny model: exactness, padding, gradients, frozen backbone, and an independent reference."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ptexp.errors import UserError
from ptexp.methods import build_model
from ptexp.methods.prefix_model import PrefixTuningModel
from ptexp.models import SequenceClassifier, count_parameters, load_backbone, load_tokenizer
from tests.conftest import make_config

SENTENCES = ["a quietly wonderful film", "not good , not bad , just long and dull and far too loud"]


def build(*overrides: str):
    """(cfg, model, tokenizer) for the tiny model with the given overrides; eager attention, no dropout."""
    cfg = make_config("model=tiny", "model.attn_implementation=eager", "model.classifier_dropout=0.0", *overrides)
    torch.manual_seed(0)
    backbone = load_backbone(cfg.model, seed=0)
    backbone.eval()
    classifier = SequenceClassifier(backbone, 2, cfg.model.pooling, cfg.model.classifier_dropout)
    model = build_model(cfg, classifier)
    model.eval()
    return cfg, model, load_tokenizer(cfg.model)


def batch(tokenizer, texts=SENTENCES):
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def randomise_prefix(model: PrefixTuningModel, seed: int = 1) -> None:
    with torch.no_grad():
        generator = torch.Generator().manual_seed(seed)
        for p in model.prefix_encoder.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))


def reference_logits(
    model: PrefixTuningModel, input_ids, attention_mask, shift: bool = False, token_type_ids=None
) -> torch.Tensor:
    """BERT written out by hand (eager attention), with the prefix K/V concatenated explicitly per layer."""
    bert = model.classifier.backbone
    cfg = bert.config
    heads, head_dim = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    kv = model.prefix_encoder.key_values().detach()  # (prefixed layers, 2, P, hidden)
    P = kv.shape[2]
    first = cfg.num_hidden_layers - kv.shape[0]  # layers below this one have no prefix
    B, L = input_ids.shape
    positions = torch.arange(L) + (P if shift else 0)
    emb = bert.embeddings
    x = (
        emb.word_embeddings(input_ids)
        + emb.position_embeddings(positions)[None]
        + emb.token_type_embeddings(torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids)
    )
    x = emb.LayerNorm(x)
    key_mask = torch.cat([torch.ones(B, P), attention_mask.float()], dim=1)  # (B, P+L)
    bias = (1.0 - key_mask)[:, None, None, :] * torch.finfo(torch.float32).min
    plain_bias = bias[..., P:]

    def split(t):  # (B, T, hidden) -> (B, heads, T, head_dim)
        return t.view(t.shape[0], t.shape[1], heads, head_dim).transpose(1, 2)

    for i, layer in enumerate(bert.encoder.layer):
        att = layer.attention.self
        q, k, v = split(att.query(x)), split(att.key(x)), split(att.value(x))
        if i >= first:
            pk = split(kv[i - first, 0].expand(B, -1, -1))
            pv = split(kv[i - first, 1].expand(B, -1, -1))
            k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim) + (bias if i >= first else plain_bias)
        ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, L, -1)
        out = layer.attention.output
        x = out.LayerNorm(out.dense(ctx) + x)
        hidden = F.gelu(layer.intermediate.dense(x))
        x = layer.output.LayerNorm(layer.output.dense(hidden) + x)
    pooled = torch.tanh(bert.pooler.dense(x[:, 0]))
    return model.classifier.head(pooled)


def test_a_sentence_pair_matches_the_eager_reference_with_its_token_types():
    """Pairs reach the prefixed backbone with their token types: [CLS] a [SEP] b [SEP], segment ids 0 then 1."""
    _, model, tokenizer = build("method=prefix", "prefix_length=5")
    randomise_prefix(model)
    enc = tokenizer(SENTENCES, ["it is not", "a film about nothing at all"], padding=True, return_tensors="pt")
    ids, mask, types = enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]
    assert int(types.max()) == 1 and bool((mask == 0).any())
    with torch.no_grad():
        ours = model(ids, mask, types)
        reference = reference_logits(model, ids, mask, token_type_ids=types)
        as_one_sentence = reference_logits(model, ids, mask)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    assert (ours - as_one_sentence).abs().max() > 1e-3 * ours.abs().max()  # the token types made a difference


@pytest.mark.parametrize("padded", [False, True])
def test_zero_length_prefix_gives_plain_model_logits(padded):
    _, model, tokenizer = build("method=prefix", "prefix_length=0")
    texts = SENTENCES if padded else SENTENCES[:1]
    input_ids, mask = batch(tokenizer, texts)
    assert bool((mask == 0).any()) == padded
    with torch.no_grad():
        plain = model.classifier(input_ids, mask)
        prefixed = model(input_ids, mask)
    assert torch.equal(prefixed, plain)


@pytest.mark.parametrize("overrides", [[], ["prefix.projection=true", "prefix.projection_hidden=16"]])
def test_padded_row_equals_the_same_row_unpadded(overrides):
    _, model, tokenizer = build("method=prefix", "prefix_length=4", *overrides)
    randomise_prefix(model)
    input_ids, mask = batch(tokenizer)
    short = int(mask[0].sum())
    assert short < input_ids.shape[1]  # row 0 really is padded
    with torch.no_grad():
        together = model(input_ids, mask)
        alone = model(input_ids[:1, :short], mask[:1, :short])
    torch.testing.assert_close(together[0], alone[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("shift,layers", [(False, "null"), (True, "null"), (False, 1)])
def test_logits_match_independent_eager_reference(shift, layers):
    """The reference is BERT written out by hand (tests/test_peft_prefix.py compares with PEFT itself)."""
    _, model, tokenizer = build(
        "method=prefix", "prefix_length=5", f"prefix.shift_positions={shift}", f"prefix.layers={layers}"
    )
    randomise_prefix(model)
    input_ids, mask = batch(tokenizer)
    with torch.no_grad():
        ours = model(input_ids, mask)
        reference = reference_logits(model, input_ids, mask, shift=shift)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


def test_shifting_positions_changes_the_output():
    _, model, tokenizer = build("method=prefix", "prefix_length=5")
    randomise_prefix(model)
    input_ids, mask = batch(tokenizer)
    with torch.no_grad():
        kept = model(input_ids, mask)
        model.shift_positions = True
        shifted = model(input_ids, mask)
    assert not torch.allclose(kept, shifted, atol=1e-4)


def test_gradients_reach_every_layer_prefix_and_nothing_frozen():
    cfg, model, tokenizer = build("method=prefix", "prefix_length=3")
    input_ids, mask = batch(tokenizer)
    model.train()
    loss = F.cross_entropy(model(input_ids, mask), torch.tensor([1, 0]))
    loss.backward()
    grad = model.prefix_encoder.prefix.grad
    assert grad is not None
    per_layer_key_value = grad.abs().sum(dim=(2, 3))  # (layers, 2)
    assert per_layer_key_value.shape == (cfg.model.config_overrides.num_hidden_layers, 2)
    assert bool((per_layer_key_value > 0).all())
    assert model.classifier.head.weight.grad is not None
    for name, p in model.classifier.backbone.named_parameters():
        assert not p.requires_grad and p.grad is None, name


@pytest.mark.parametrize("length", [1, 5, 20])
def test_trainable_count_matches_formula(length):
    _, model, _ = build("method=prefix", f"prefix_length={length}")
    c = model.classifier.config
    head = c.hidden_size * 2 + 2
    total, trainable = count_parameters(model)
    assert trainable == c.num_hidden_layers * 2 * length * c.hidden_size + head
    assert total == trainable + count_parameters(model.classifier.backbone)[0]
    trainable_names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable_names == {"prefix_encoder.prefix", "classifier.head.weight", "classifier.head.bias"}


def test_top_k_layers_prefix_counts_and_gradients():
    _, model, tokenizer = build("method=prefix", "prefix_length=4", "prefix.layers=1")
    c = model.classifier.config
    assert model.prefix_encoder.prefix.shape == (1, 2, 4, c.hidden_size)
    assert count_parameters(model)[1] == 1 * 2 * 4 * c.hidden_size + c.hidden_size * 2 + 2
    input_ids, mask = batch(tokenizer)
    F.cross_entropy(model(input_ids, mask), torch.tensor([1, 0])).backward()
    assert bool((model.prefix_encoder.prefix.grad.abs().sum(dim=(2, 3)) > 0).all())
    with pytest.raises(UserError, match=r"prefix\.layers"):
        build("method=prefix", "prefix.layers=3")


def test_trainable_count_with_projection_matches_formula():
    _, model, _ = build("method=prefix", "prefix_length=6", "prefix.projection=true", "prefix.projection_hidden=24")
    c = model.classifier.config
    h, layers, P, m = c.hidden_size, c.num_hidden_layers, 6, 24
    projection = P * h + (h * m + m) + (m * layers * 2 * h + layers * 2 * h)
    assert count_parameters(model)[1] == projection + h * 2 + 2


def test_prefix_dropout_only_while_training():
    _, model, tokenizer = build("method=prefix", "prefix_length=4", "prefix.dropout=0.5")
    randomise_prefix(model)
    input_ids, mask = batch(tokenizer)
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(input_ids, mask), model(input_ids, mask))
        model.train()
        model.classifier.backbone.eval()  # isolate the prefix dropout from the backbone's own
        torch.manual_seed(0)
        first = model(input_ids, mask)
        torch.manual_seed(1)
        second = model(input_ids, mask)
    assert not torch.equal(first, second)


def test_prefix_takes_no_positions_unless_shifted():
    """The prefix enters at each attention, not the token sequence: only shifted real tokens need P more positions."""
    _, model, _ = build("method=prefix", "prefix_length=500", "data.max_length=64")
    assert model.prefix_encoder.prefix.shape[2] == 500
    with pytest.raises(UserError, match="prefix_length"):
        build("method=prefix", "prefix_length=500", "data.max_length=64", "prefix.shift_positions=true")


def backbone_key_values(bert, ids: list[int]) -> dict[tuple[int, int], torch.Tensor]:
    """{(layer, 0 key / 1 value): what that frozen layer's key or value projection computes for ``ids`` run as one
    sequence at positions 0.., read by forward hooks on the projections."""
    captured: dict[tuple[int, int], torch.Tensor] = {}
    hooks = [
        getattr(layer.attention.self, name).register_forward_hook(
            lambda _m, _i, out, key=(i, kind): captured.__setitem__(key, out[0].detach())
        )
        for i, layer in enumerate(bert.encoder.layer)
        for kind, name in enumerate(("key", "value"))
    ]
    with torch.no_grad():
        bert(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    for hook in hooks:
        hook.remove()
    return captured


def test_prefix_init_zero():
    _, zero, _ = build("method=prefix", "prefix_length=3", "prefix.init=zero")
    assert not zero.prefix_encoder.prefix.any()


@pytest.mark.parametrize("init,layers", [("tokens", "null"), ("tokens", 1), ("vocab", "null"), ("vocab", 1)])
def test_prefix_init_from_activations_is_the_backbones_own_keys_and_values(monkeypatch, init, layers):
    """init=tokens: init_text's tokens, repeated to P; init=vocab: P tokens drawn from the vocabulary. Either way,
    each prefixed layer's prefix is what that layer's key and value projections compute for those tokens."""
    from ptexp.methods import prefix

    drawn: list[list[int]] = []
    draw = prefix.vocab_token_ids
    monkeypatch.setattr(prefix, "vocab_token_ids", lambda *args: drawn.append(draw(*args)) or drawn[-1])
    text = "what a delightful surprise"
    overrides = ["method=prefix", "prefix_length=6", f"prefix.init={init}", f"prefix.layers={layers}"]
    _, model, tokenizer = build(*overrides, f"prefix.init_text='{text}'")
    if init == "tokens":
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids = [ids[i % len(ids)] for i in range(6)]
        assert not drawn
    else:
        (ids,) = drawn
        assert len(ids) == 6 and min(ids) >= 1000 and max(ids) < tokenizer.vocab_size
    captured = backbone_key_values(model.classifier.backbone, ids)
    prefix_kv = model.prefix_encoder.prefix.detach()  # (prefixed layers, 2, P, hidden)
    layers_total = model.classifier.config.num_hidden_layers
    assert prefix_kv.shape[0] == (layers_total if layers == "null" else layers)
    for layer in range(model.first_prefixed, layers_total):
        for kind in (0, 1):
            expected = captured[(layer, kind)]
            torch.testing.assert_close(prefix_kv[layer - model.first_prefixed, kind], expected, atol=1e-6, rtol=0)


def test_prefix_init_vocab_draws_with_the_run_seed():
    """The draw uses torch's generator, which the trainer seeds with the run's seed: the same seed draws the same."""
    cfg = make_config("model=tiny", "method=prefix", "prefix_length=4", "prefix.init=vocab")

    def prefix_of(seed: int) -> torch.Tensor:
        classifier = SequenceClassifier(load_backbone(cfg.model, seed=0).eval(), 2, cfg.model.pooling, 0.0)
        torch.manual_seed(seed)
        return build_model(cfg, classifier).prefix_encoder.prefix.detach()

    assert torch.equal(prefix_of(1), prefix_of(1))
    assert not torch.equal(prefix_of(1), prefix_of(2))


def test_prompt_of_length_zero_gives_plain_model_logits_and_padding_does_not_matter():
    _, plain_prompt, tokenizer = build("method=prompt", "prefix_length=0")
    input_ids, mask = batch(tokenizer)
    with torch.no_grad():
        assert torch.equal(plain_prompt(input_ids, mask), plain_prompt.classifier(input_ids, mask))
    _, model, _ = build("method=prompt", "prefix_length=4", "model.pooling=mean")
    short = int(mask[0].sum())
    with torch.no_grad():
        together = model(input_ids, mask)
        alone = model(input_ids[:1, :short], mask[:1, :short])
    torch.testing.assert_close(together[0], alone[0], atol=1e-5, rtol=0)


def test_prompt_init_text_uses_the_word_embeddings_of_its_tokens():
    _, model, tokenizer = build("method=prompt", "prefix_length=5", "prompt.init=text", "prompt.init_text=great")
    (great,) = tokenizer("great", add_special_tokens=False)["input_ids"]
    embedding = model.classifier.backbone.get_input_embeddings().weight
    assert torch.equal(model.prompt.detach(), embedding[great].detach().expand(5, -1))

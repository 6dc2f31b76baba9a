"""The inference timing after the final evaluation: what it logs, and that merging LoRA/IA3 leaves the model alone."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import PeftModel

from ptexp.data import Collator, encode
from ptexp.evaluation import forward_batch
from ptexp.experiment import build_experiment, prepare_config
from ptexp.inference import inference_cost, merged_copy

CPU = torch.device("cpu")


def built(tiny_config, method: str):
    cfg = tiny_config(f"method={method}")
    prepare_config(cfg)
    experiment = build_experiment(cfg, CPU)
    data = encode(experiment.dataset.eval, experiment.tokenizer, cfg.data.max_length)
    return experiment.model, data, Collator(experiment.tokenizer.pad_token_id)


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_timing_merged_leaves_the_trained_model_as_it_was_and_merged_gives_the_same_logits(tiny_config, method):
    model, data, collate = built(tiny_config, method)
    torch.manual_seed(0)
    with torch.no_grad():  # an adapter that changes something (LoRA's B starts at zero, IA3's scales at one)
        for name, param in model.named_parameters():
            if param.requires_grad and ("lora_" in name or "ia3_" in name):
                param.add_(0.3 * torch.randn_like(param))
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    rows = list(range(8))
    logits, _ = forward_batch(model.eval(), data, rows, collate, CPU, None)

    cost = inference_cost(model, data, batch_size=4, batches=2, collate=collate, device=CPU)

    assert cost["infer/batch_size"] == 4
    for prefix in ("infer/", "infer/merged_"):
        assert cost[f"{prefix}examples_per_s"] > 0
        assert cost[f"{prefix}ms_per_example"] == pytest.approx(1000 / cost[f"{prefix}examples_per_s"])
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert isinstance(model.backbone, PeftModel)  # still the adapter that is saved, not merged into the weights
    merged = merged_copy(model)
    assert not isinstance(merged.backbone, PeftModel)
    assert not any("lora_" in name or "ia3_" in name for name, _ in merged.named_parameters())
    merged_logits, _ = forward_batch(merged.eval(), data, rows, collate, CPU, None)
    assert not torch.allclose(logits, forward_batch(without_adapter(model), data, rows, collate, CPU, None)[0])
    torch.testing.assert_close(merged_logits, logits, rtol=1e-4, atol=1e-5)


def without_adapter(model):
    """A copy with the adapter taken out (PEFT's ``unload``): the perturbed adapter must change the logits, else
    the merged-equals-unmerged check above would hold trivially."""
    plain = copy.deepcopy(model).eval()
    plain.backbone = plain.backbone.unload()
    return plain


@pytest.mark.parametrize("method", ["full", "prefix", "prompt"])
def test_methods_that_do_not_fold_into_the_weights_are_timed_once(tiny_config, method):
    model, data, collate = built(tiny_config, method)
    assert merged_copy(model) is None
    cost = inference_cost(model, data, batch_size=3, batches=1, collate=collate, device=CPU)
    assert set(cost) == {"infer/batch_size", "infer/examples_per_s", "infer/ms_per_example"}
    assert inference_cost(model, data, batch_size=3, batches=0, collate=collate, device=CPU) == {}

"""AdaLoRA through the method hooks: the regulariser is PEFT's, the allocator prunes ranks while training, a run
stopped by SIGTERM resumes to the uninterrupted run exactly (the allocator's state, which the checkpoint holds, as
the uninterrupted run had it), and the adapter scores as the run did."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from ptexp.checkpoint import load_checkpoint
from ptexp.evaluate import evaluate_adapter
from ptexp.experiment import build_experiment, prepare_config, set_up_training
from ptexp.methods.adalora import AdaLoraTraining
from ptexp.trainer import run_experiment
from tests.test_reliability import interrupt_at, losses

# 64 rows / batch 8 = 8 steps an epoch, 2 epochs: 16 steps. Full budget for 2 steps, pruning from 4 ranks a module
# to an average of 2 by step 12 (an allocation every 2 steps), then 4 steps at the final masks.
ADALORA = (
    "method=adalora",
    "trainer.epochs=2",
    "trainer.batch_size=8",
    "trainer.log_every=1",
    "adalora.init_r=4",
    "adalora.target_r=2",
    "adalora.tinit=2",
    "adalora.tfinal=4",
    "adalora.deltaT=2",
)
ESTIMATES = AdaLoraTraining.ESTIMATES
STOPS = (7, 14)  # stopped in the pruning phase (the moving averages matter), then in the final one (the pattern does)


def test_the_extra_loss_is_peft_adaloras_orthogonal_regulariser(tiny_config):
    cfg = tiny_config(*ADALORA)
    prepare_config(cfg)
    built = build_experiment(cfg, torch.device("cpu"))
    training = set_up_training(cfg, built)
    tuner = built.model.backbone.base_model
    with torch.no_grad():
        for name, p in tuner.named_parameters():
            if "lora_" in name:
                p.normal_()  # far from orthogonal
    ours = training.extra_loss()
    tuner.model.forward = lambda *args, **kwargs: SimpleNamespace(loss=torch.zeros(()))
    peft = tuner.forward().loss  # PEFT adds orth_reg_weight x its regulariser to the loss a model returns
    assert float(ours.detach()) > 1 and torch.equal(ours, peft)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted run (its allocator's state recorded after each step), and the same run stopped by SIGTERM
    at step 7, resumed, stopped again at step 14 and resumed to the end (its checkpoint at each stop kept)."""
    from tests.conftest import TINY, make_config

    root = tmp_path_factory.mktemp("adalora")
    overrides = [*TINY, *ADALORA]

    def config(*extra):
        return make_config(*overrides, *extra, output_root=root / "outputs")

    recorded: dict[str, dict[int, dict]] = {"reference": {}, "stopped": {}}
    after_step = AdaLoraTraining.after_step

    def recording(run: str):
        def record(self, step: int) -> None:
            after_step(self, step)
            recorded[run][step] = self.state_dict()

        return record

    with pytest.MonkeyPatch.context() as m:
        m.setattr(AdaLoraTraining, "after_step", recording("reference"))
        reference = run_experiment(config("tracking.enabled=false"), root / "reference", overrides)
    saved, resume = {}, [f"trainer.resume={root / 'stopped'}"]
    for n, stop in enumerate(STOPS):
        with pytest.MonkeyPatch.context() as m:
            m.setattr(AdaLoraTraining, "after_step", recording("stopped"))
            interrupt_at(m, stop)
            with pytest.raises(KeyboardInterrupt):
                run_experiment(config(*resume[:n]), root / "stopped", overrides)
        saved[stop] = load_checkpoint(root / "stopped")
    with pytest.MonkeyPatch.context() as m:
        m.setattr(AdaLoraTraining, "after_step", recording("stopped"))
        resumed = run_experiment(config(*resume), root / "x", overrides)
    return SimpleNamespace(root=root, reference=reference, resumed=resumed, recorded=recorded, saved=saved)


def same_state(a: dict, b: dict) -> bool:
    tensors = all(a[k].keys() == b[k].keys() and all(torch.equal(a[k][n], b[k][n]) for n in a[k]) for k in ESTIMATES)
    return tensors and a["rank_pattern"] == b["rank_pattern"]


def test_a_run_stopped_twice_resumes_to_the_uninterrupted_run_exactly(runs):
    root = runs.root
    assert len(losses(root / "reference")) == 16
    assert losses(root / "stopped") == losses(root / "reference")  # every step's train loss, bit for bit
    assert runs.resumed["eval/loss"] == runs.reference["eval/loss"]
    assert runs.resumed["eval/accuracy"] == runs.reference["eval/accuracy"]


def test_the_checkpoint_holds_the_allocators_state_and_the_resumed_run_goes_on_from_it(runs):
    reference, stopped = runs.recorded["reference"], runs.recorded["stopped"]
    for stop, checkpoint in runs.saved.items():
        assert checkpoint["loop"]["step"] == stop and same_state(checkpoint["method"], reference[stop])
    assert sorted(stopped) == sorted(reference) == list(range(1, 17))
    assert all(same_state(stopped[step], reference[step]) for step in reference)  # after each resume too
    pruning, final = runs.saved[STOPS[0]]["method"], runs.saved[STOPS[1]]["method"]
    assert len(pruning["exp_avg_ipt"]) == 12  # A, E, B of 4 modules, mid-way through their moving averages
    assert any(t.abs().sum() > 0 for t in pruning["exp_avg_unc"].values())
    assert final["exp_avg_ipt"] == {} and len(final["rank_pattern"]) == 4  # after pruning: the pattern alone


def test_ranks_are_pruned_and_the_adapter_scores_as_the_run_did(runs):
    adapter = runs.root / "reference" / "adapter"
    meta = json.loads((adapter / "adapter.json").read_text())
    pattern = meta["method_info"]["rank_pattern"]
    assert len(pattern) == 4  # query and value of 2 layers, each with init_r = 4 triplets
    kept = sum(sum(flags) for flags in pattern.values())
    assert kept == 2 * len(pattern)  # the final budget: target_r on average
    singular = [t for name, t in load_file(str(adapter / "adapter.safetensors")).items() if ".lora_E." in name]
    assert sum(int((t == 0).sum()) for t in singular) == 4 * len(pattern) - kept  # the pruned ones are zero
    again = evaluate_adapter(adapter, [])
    assert again["eval/loss"] == runs.reference["eval/loss"] == meta["eval"]["eval/loss"]
    assert again["eval/accuracy"] == runs.reference["eval/accuracy"]

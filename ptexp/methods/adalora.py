"""AdaLoRA (Zhang et al. 2023) through PEFT: LoRA in SVD form (P diag(E) Q) whose rank budget is pruned while it
trains, from ``init_r`` per module to an average of ``target_r``, by the sensitivity of each singular triplet.

PEFT's schedule is in optimizer steps: ``tinit`` steps at the full budget, a cubic decrease until ``total_steps -
tfinal``, then ``tfinal`` steps at the final masks (``deltaT``: steps between two budget allocations). The run's
step count is given at set-up (:func:`training`); after every optimizer step the rank allocator updates its
importance estimates and masks E (``update_and_allocate``); PEFT's orthogonal regulariser (added to the loss in
``AdaLoraModel.forward`` when labels are given, which ptexp never passes) is the method's extra loss; the allocator's
estimates and rank pattern go into checkpoints, so a resumed run is the uninterrupted one. The adapter holds the full
``init_r`` tensors with the pruned singular values zero (so it scores as the run did) and the rank pattern.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from ptexp.errors import need
from ptexp.methods.base import MethodSpec, Training

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ptexp.adapters import Exported
    from ptexp.models import SequenceClassifier


@dataclass
class AdaLoraOptions:
    """AdaLoRA through PEFT's AdaLoraConfig (its names; ``alpha``, ``dropout``: lora_alpha, lora_dropout)."""

    init_r: int = 12  # the rank each target module starts with
    target_r: int = 8  # the average rank the budget is pruned to
    tinit: int = 0  # steps at the full budget before pruning starts
    tfinal: int = 0  # steps at the final masks after pruning ends
    deltaT: int = 1  # steps between two budget allocations (PEFT's name)
    beta1: float = 0.85  # EMA of the sensitivity
    beta2: float = 0.85  # EMA of its uncertainty
    orth_reg_weight: float = 0.5  # weight of the orthogonal regulariser of P and Q
    target_modules: list[str] = field(default_factory=lambda: ["query", "value"])
    alpha: int = 16
    dropout: float = 0.1


def check(options: AdaLoraOptions) -> None:
    o = options
    need(o.init_r >= 1, "adalora.init_r", f"{o.init_r}", "an integer >= 1")
    above = f" > adalora.init_r {o.init_r}" if o.target_r > o.init_r else ""
    need(1 <= o.target_r <= o.init_r, "adalora.target_r", f"{o.target_r}{above}", "1 <= target_r <= init_r")
    need(o.tinit >= 0, "adalora.tinit", f"{o.tinit}", "an integer >= 0 (steps)")
    need(o.tfinal >= 0, "adalora.tfinal", f"{o.tfinal}", "an integer >= 0 (steps)")
    need(o.deltaT >= 1, "adalora.deltaT", f"{o.deltaT}", "an integer >= 1 (steps)")
    need(0 < o.beta1 < 1, "adalora.beta1", f"{o.beta1}", "0 < beta1 < 1, e.g. 0.85")
    need(0 < o.beta2 < 1, "adalora.beta2", f"{o.beta2}", "0 < beta2 < 1, e.g. 0.85")
    need(o.orth_reg_weight >= 0, "adalora.orth_reg_weight", f"{o.orth_reg_weight}", ">= 0, e.g. 0.5")
    need(o.alpha > 0, "adalora.alpha", f"{o.alpha}", "an integer > 0 (the update is scaled by alpha/init_r)")
    need(0 <= o.dropout < 1, "adalora.dropout", f"{o.dropout}", "0 <= p < 1")


def build(cfg: DictConfig, classifier: SequenceClassifier) -> nn.Module:
    from peft import AdaLoraConfig

    from ptexp.methods.peft_backbone import wrap_backbone

    o = cfg.adalora
    peft_config = AdaLoraConfig(
        init_r=o.init_r,
        target_r=o.target_r,
        tinit=o.tinit,
        tfinal=o.tfinal,
        deltaT=o.deltaT,
        beta1=o.beta1,
        beta2=o.beta2,
        orth_reg_weight=o.orth_reg_weight,
        total_step=o.tinit + o.tfinal + 1,  # PEFT wants one now; the run's own is set by training()
        target_modules=list(o.target_modules),
        lora_alpha=o.alpha,
        lora_dropout=o.dropout,
    )
    return wrap_backbone(classifier, peft_config, "adalora")


def tuner(model: nn.Module) -> Any:
    """PEFT's AdaLoraModel inside the classifier."""
    return model.backbone.base_model


class AdaLoraTraining(Training):
    """PEFT's rank allocation in ptexp's loop: ``update_and_allocate`` after each step, the regulariser as the
    extra loss, the allocator's state in checkpoints."""

    ESTIMATES = ("ipt", "exp_avg_ipt", "exp_avg_unc")

    def __init__(self, model: nn.Module, options: AdaLoraOptions, total_steps: int):
        self.tuner = tuner(model)
        self.adapter = self.tuner.trainable_adapter_name
        self.config = self.tuner.peft_config[self.adapter]
        self.weight = float(options.orth_reg_weight)
        self.tuner.rankallocator.set_total_step(total_steps)

    def after_step(self, step: int) -> None:
        self.tuner.update_and_allocate(step - 1)  # PEFT counts global_step from 0

    def extra_loss(self) -> torch.Tensor | float:
        """``orth_reg_weight`` x the mean over the P (lora_A) and Q (lora_B) matrices of ||P P^T - I||_F and
        ||Q^T Q - I||_F, summed in PEFT's order (``AdaLoraModel.forward``)."""
        import torch

        if not self.weight:
            return 0.0
        total, count = 0.0, 0
        for name, p in self.tuner.model.named_parameters():
            if ("lora_A" in name or "lora_B" in name) and self.adapter in name:
                cov = p @ p.T if "lora_A" in name else p.T @ p
                total = total + torch.norm(cov - torch.eye(*cov.size(), out=torch.empty_like(cov)), p="fro")
                count += 1
        return self.weight * (total / count) if count else 0.0

    def state_dict(self) -> dict[str, Any]:
        allocator = self.tuner.rankallocator
        state = {key: {n: t.cpu().clone() for n, t in getattr(allocator, key).items()} for key in self.ESTIMATES}
        return {**state, "rank_pattern": dict(self.config.rank_pattern or {})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        allocator, device = self.tuner.rankallocator, next(self.tuner.parameters()).device
        for key in self.ESTIMATES:
            setattr(allocator, key, {n: t.to(device) for n, t in state[key].items()})
        self.config.rank_pattern = dict(state["rank_pattern"]) or None


def training(model: nn.Module, options: AdaLoraOptions, total_steps: int) -> Training:
    """The allocator set up for ``total_steps``; PEFT refuses a schedule with no step left to prune ranks in."""
    o = options
    key = "adalora.tinit" if o.tinit >= total_steps else "adalora.tfinal"
    need(
        o.tinit + o.tfinal < total_steps,
        key,
        f"tinit {o.tinit} + tfinal {o.tfinal} leave no step to prune ranks in the run's {total_steps} steps",
        f"adalora.tinit + adalora.tfinal < {total_steps}, or more trainer.epochs / trainer.max_steps",
    )
    return AdaLoraTraining(model, options, total_steps)


def export(model: nn.Module, tensors: dict[str, torch.Tensor]) -> Exported:
    """The trained tensors (pruned singular values are zeros in ``lora_E``) and, for adapter.json, each module's
    rank pattern (which of its ``init_r`` triplets were kept; none before the first allocation)."""
    from ptexp.adapters import Exported

    pattern = tuner(model).peft_config[tuner(model).trainable_adapter_name].rank_pattern or {}
    return Exported(tensors, info={"rank_pattern": {name: list(kept) for name, kept in pattern.items()}})


METHOD = MethodSpec(
    name="adalora",
    summary="SVD-form low-rank updates whose ranks are pruned to an average of target_r while training (PEFT) + head",
    build=build,
    options=AdaLoraOptions,
    check=check,
    export=export,
    training=training,
    variant=(("adalora.target_r", "r"),),
)

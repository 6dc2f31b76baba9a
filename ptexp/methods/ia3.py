"""IA3 (Liu et al. 2022) through PEFT: learned rescaling of keys, values and feed-forward activations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from ptexp.errors import UserError
from ptexp.methods.base import MethodSpec

if TYPE_CHECKING:
    from torch import nn

    from ptexp.models import SequenceClassifier


@dataclass
class IA3Options:
    """IA3 (Liu et al. 2022) through PEFT; PEFT's default targets for BERT."""

    target_modules: list[str] = field(default_factory=lambda: ["key", "value", "output.dense"])
    feedforward_modules: list[str] = field(default_factory=lambda: ["output.dense"])


def build(cfg: DictConfig, classifier: SequenceClassifier) -> nn.Module:
    from peft import IA3Config

    from ptexp.methods.peft_backbone import check_targets, wrap_backbone

    targets, feedforward = list(cfg.ia3.target_modules), list(cfg.ia3.feedforward_modules)
    check_targets(classifier, targets, "ia3")
    outside = [name for name in feedforward if name not in targets]
    if outside:
        raise UserError(
            f"ia3.feedforward_modules: {outside} not in ia3.target_modules {targets}; valid: a subset of "
            "ia3.target_modules (the feed-forward ones among them, e.g. output.dense)"
        )
    peft_config = IA3Config(target_modules=targets, feedforward_modules=feedforward)
    return wrap_backbone(classifier, peft_config, "ia3")


METHOD = MethodSpec(
    name="ia3",
    summary="scaling vectors on key, value and FFN output (PEFT) + head",
    build=build,
    options=IA3Options,
    variant=(("ia3.target_modules", ""),),
)

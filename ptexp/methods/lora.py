"""LoRA (Hu et al. 2021) through PEFT: low-rank updates on the attention projections; the head trains."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from ptexp.errors import need
from ptexp.methods.base import MethodSpec

if TYPE_CHECKING:
    from torch import nn

    from ptexp.models import SequenceClassifier


@dataclass
class LoraOptions:
    """LoRA (Hu et al. 2021) through PEFT."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    target_modules: list[str] = field(default_factory=lambda: ["query", "value"])


def check(options: LoraOptions) -> None:
    need(options.r >= 1, "lora.r", f"{options.r}", "an integer >= 1")
    need(0 <= options.dropout < 1, "lora.dropout", f"{options.dropout}", "0 <= p < 1")
    need(options.alpha > 0, "lora.alpha", f"{options.alpha}", "an integer > 0 (the update is scaled by alpha/r)")


def build(cfg: DictConfig, classifier: SequenceClassifier) -> nn.Module:
    from peft import LoraConfig

    from ptexp.methods.peft_backbone import wrap_backbone

    options = cfg.lora
    peft_config = LoraConfig(
        r=options.r,
        lora_alpha=options.alpha,
        lora_dropout=options.dropout,
        target_modules=list(options.target_modules),
    )
    return wrap_backbone(classifier, peft_config, "lora")


METHOD = MethodSpec(
    name="lora",
    summary="rank-r A, B on query and value (PEFT) + head",
    build=build,
    options=LoraOptions,
    check=check,
    variant=(("lora.r", "r"),),
)

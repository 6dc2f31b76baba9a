"""LoRA (Hu et al. 2021) through PEFT: low-rank updates on the attention projections; the head trains."""

from __future__ import annotations

from omegaconf import DictConfig
from peft import LoraConfig
from torch import nn

from ptexp.methods.base import MethodSpec
from ptexp.methods.peft_backbone import wrap_backbone
from ptexp.models import SequenceClassifier


def build(cfg: DictConfig, classifier: SequenceClassifier) -> nn.Module:
    options = cfg.lora
    peft_config = LoraConfig(
        r=options.r,
        lora_alpha=options.alpha,
        lora_dropout=options.dropout,
        target_modules=list(options.target_modules),
    )
    return wrap_backbone(classifier, peft_config, "lora")


METHOD = MethodSpec(name="lora", summary="rank-r A, B on query and value (PEFT) + head", build=build)

"""IA3 (Liu et al. 2022) through PEFT: learned rescaling of keys, values and feed-forward activations."""

from __future__ import annotations

from omegaconf import DictConfig
from peft import IA3Config
from torch import nn

from ptexp.methods.base import MethodSpec
from ptexp.methods.peft_backbone import wrap_backbone
from ptexp.models import SequenceClassifier


def build(cfg: DictConfig, classifier: SequenceClassifier) -> nn.Module:
    options = cfg.ia3
    peft_config = IA3Config(
        target_modules=list(options.target_modules), feedforward_modules=list(options.feedforward_modules)
    )
    return wrap_backbone(classifier, peft_config)


METHOD = MethodSpec(name="ia3", summary="scaling vectors on key, value and FFN output (PEFT) + head", build=build)

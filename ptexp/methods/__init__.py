"""The method registry: one module per method, each exporting a ``METHOD`` spec (see :mod:`ptexp.methods.base`)."""

from __future__ import annotations

from omegaconf import DictConfig
from torch import nn

from ptexp.methods import bitfit, full, ia3, linear_probe, lora, peft_prefix, prefix, prompt
from ptexp.methods.base import MethodSpec, check_position_budget
from ptexp.models import SequenceClassifier

METHODS: dict[str, MethodSpec] = {
    module.METHOD.name: module.METHOD for module in (full, prefix, prompt, lora, ia3, linear_probe, bitfit, peft_prefix)
}


def build_model(cfg: DictConfig, classifier: SequenceClassifier) -> nn.Module:
    """Wrap ``classifier`` for ``cfg.method.name``."""
    return METHODS[cfg.method.name].build(cfg, classifier)


__all__ = ["METHODS", "MethodSpec", "build_model", "check_position_budget"]

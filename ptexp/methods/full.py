"""Full fine-tuning: every backbone and head parameter trains."""

from __future__ import annotations

from typing import TYPE_CHECKING

from omegaconf import DictConfig

from ptexp.methods.base import MethodSpec

if TYPE_CHECKING:
    from torch import nn

    from ptexp.models import SequenceClassifier


def build(cfg: DictConfig, classifier: SequenceClassifier) -> nn.Module:
    classifier.requires_grad_(True)
    return classifier


METHOD = MethodSpec(name="full", summary="every parameter (backbone + head)", build=build)

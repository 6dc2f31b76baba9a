"""Full fine-tuning: every backbone and head parameter trains."""

from __future__ import annotations

from omegaconf import DictConfig
from torch import nn

from ptexp.methods.base import MethodSpec
from ptexp.models import SequenceClassifier


def build(cfg: DictConfig, classifier: SequenceClassifier) -> nn.Module:
    classifier.requires_grad_(True)
    return classifier


METHOD = MethodSpec(name="full", summary="every parameter (backbone + head)", build=build)

"""Linear probe: the backbone is frozen; only the classification head trains."""

from __future__ import annotations

from omegaconf import DictConfig
from torch import nn

from ptexp.methods import MethodSpec
from ptexp.models import SequenceClassifier


def build(cfg: DictConfig, classifier: SequenceClassifier) -> nn.Module:
    classifier.requires_grad_(False)
    classifier.head.requires_grad_(True)
    return classifier


METHOD = MethodSpec(name="linear_probe", summary="the classification head only; backbone frozen", build=build)

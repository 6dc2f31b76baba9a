"""BitFit (Ben Zaken et al. 2022): only the backbone's bias terms and the classification head train."""

from __future__ import annotations

from omegaconf import DictConfig
from torch import nn

from ptexp.methods import MethodSpec
from ptexp.models import SequenceClassifier


def build(cfg: DictConfig, classifier: SequenceClassifier) -> nn.Module:
    classifier.requires_grad_(False)
    for name, param in classifier.backbone.named_parameters():
        param.requires_grad_(name.endswith(".bias"))
    classifier.head.requires_grad_(True)
    return classifier


METHOD = MethodSpec(name="bitfit", summary="every bias in the backbone + head", build=build)

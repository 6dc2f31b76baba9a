"""BitFit (Ben Zaken et al. 2022): only the backbone's bias terms and the classification head train."""

from __future__ import annotations

from typing import TYPE_CHECKING

from omegaconf import DictConfig

from ptexp.methods.base import MethodSpec, freeze_all_but_head

if TYPE_CHECKING:
    from torch import nn

    from ptexp.models import SequenceClassifier


def build(cfg: DictConfig, classifier: SequenceClassifier) -> nn.Module:
    freeze_all_but_head(classifier)
    for name, param in classifier.backbone.named_parameters():
        param.requires_grad_(name.endswith(".bias"))
    return classifier


METHOD = MethodSpec(name="bitfit", summary="every bias in the backbone + head", build=build)

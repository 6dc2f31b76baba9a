"""Linear probe: the backbone is frozen; only the classification head trains, on features the frozen backbone
computes once per example (:class:`~ptexp.methods.linear_probe_model.CachedFeatureProbe`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from omegaconf import DictConfig

from ptexp.methods.base import MethodSpec, freeze_all_but_head

if TYPE_CHECKING:
    from torch import nn

    from ptexp.models import SequenceClassifier


def build(cfg: DictConfig, classifier: SequenceClassifier) -> nn.Module:
    from ptexp.methods.linear_probe_model import CachedFeatureProbe

    freeze_all_but_head(classifier)
    return CachedFeatureProbe(classifier)


METHOD = MethodSpec(
    name="linear_probe",
    summary="the classification head only; backbone frozen, its features computed once per example",
    build=build,
)

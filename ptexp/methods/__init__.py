"""The method registry: one module per method, each exporting a ``METHOD`` spec."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from omegaconf import DictConfig
from torch import nn

from ptexp.models import SequenceClassifier


@dataclass(frozen=True)
class MethodSpec:
    """How a method turns the classifier into the model that trains.

    ``build(cfg, classifier)`` returns a module with ``forward(input_ids, attention_mask) -> logits``
    whose parameters have ``requires_grad`` set exactly as the method trains them.
    """

    name: str
    summary: str  # what trains, for the README and logs
    build: Callable[[DictConfig, SequenceClassifier], nn.Module]
    uses_prefix_length: bool = False


def _registry() -> dict[str, MethodSpec]:
    from ptexp.methods import bitfit, full, ia3, linear_probe, lora, prefix

    methods = (full, prefix, lora, ia3, linear_probe, bitfit)
    return {module.METHOD.name: module.METHOD for module in methods}


METHODS: dict[str, MethodSpec] = _registry()


def build_model(cfg: DictConfig, classifier: SequenceClassifier) -> nn.Module:
    """Wrap ``classifier`` for ``cfg.method.name``."""
    return METHODS[cfg.method.name].build(cfg, classifier)

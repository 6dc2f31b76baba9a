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
    from ptexp.methods import bitfit, full, ia3, linear_probe, lora, peft_prefix, prefix, prompt

    methods = (full, prefix, prompt, lora, ia3, linear_probe, bitfit, peft_prefix)
    return {module.METHOD.name: module.METHOD for module in methods}


def check_position_budget(cfg: DictConfig, classifier: SequenceClassifier) -> None:
    """P extra positions plus data.max_length tokens must fit the model's position embeddings."""
    from ptexp.config import UserError

    budget = classifier.config.max_position_embeddings
    if cfg.prefix_length + cfg.data.max_length > budget:
        raise UserError(
            f"prefix_length: {cfg.prefix_length} + data.max_length {cfg.data.max_length} tokens exceed the model's "
            f"{budget} positions; valid: prefix_length <= {budget - cfg.data.max_length}"
        )


def build_model(cfg: DictConfig, classifier: SequenceClassifier) -> nn.Module:
    """Wrap ``classifier`` for ``cfg.method.name``."""
    return METHODS[cfg.method.name].build(cfg, classifier)


METHODS: dict[str, MethodSpec] = _registry()

"""What every method module shares: its spec, the position-budget check and the freeze-all-but-the-head helper.

Method modules import this module, never their own package (whose ``__init__`` is the registry that imports them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from omegaconf import DictConfig
from torch import nn

from ptexp.errors import UserError
from ptexp.models import SequenceClassifier, position_budget


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


def check_position_budget(cfg: DictConfig, classifier: SequenceClassifier) -> None:
    """P extra positions plus data.max_length tokens must fit the model's position embeddings (data.max_length alone
    was checked to fit by :func:`ptexp.experiment.check_max_length`)."""
    budget = position_budget(classifier.backbone)
    if cfg.prefix_length + cfg.data.max_length > budget:
        raise UserError(
            f"prefix_length: {cfg.prefix_length} + data.max_length {cfg.data.max_length} tokens exceed the model's "
            f"{budget} positions; valid: prefix_length <= {budget - cfg.data.max_length}"
        )


def freeze_all_but_head(classifier: SequenceClassifier) -> None:
    """Freeze the backbone (and everything else in ``classifier``); the classification head trains."""
    classifier.requires_grad_(False)
    classifier.head.requires_grad_(True)

"""What every method module shares: :class:`MethodSpec` (what a module declares as ``METHOD``), :class:`Training`
(a method's part in the training loop), the variant naming, and the helpers several methods use.

Method modules import this module, never their own package (whose ``__init__`` is the registry that imports them).
The command line imports the registry before torch (to check every method's options in about a second), so a method
module imports torch, transformers and PEFT inside the functions that need them; nn.Modules of its own live in a
sibling ``NAME_model.py`` that its ``build`` imports.
"""

from __future__ import annotations

import ast
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from ptexp.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ptexp.adapters import Exported
    from ptexp.models import SequenceClassifier


class Training:
    """A method's part in the training loop (:mod:`ptexp.loop`), made by its ``training`` hook for a run of a known
    number of optimizer steps. This base does nothing; a method without the hook gets it."""

    def extra_loss(self) -> torch.Tensor | float:
        """A term added to this step's task loss before backward (0.0: none)."""
        return 0.0

    def after_step(self, step: int) -> None:
        """After optimizer step ``step`` (1 for the first), with its gradients still in place."""

    def state_dict(self) -> dict[str, Any]:
        """What an exact resume needs besides the trained tensors; the checkpoint saves it."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`state_dict` saved (an empty dict from a checkpoint without it)."""


@dataclass(frozen=True)
class MethodSpec:
    """Everything ptexp knows about a method, declared by its module as ``METHOD``:

    - ``build(cfg, classifier)``: a module with ``forward(input_ids, attention_mask) -> logits`` whose parameters
      have ``requires_grad`` set exactly as the method trains them;
    - ``options``: the dataclass of its config section ``section`` (default: its name; null unless its YAML sets
      it), registered into the schema by the registry, so a typo or a wrong type there fails as anywhere else;
    - ``check(options)``: checks across its option keys that the schema cannot express (a UserError each);
    - ``export(model, tensors)``: what its adapter holds, from the trained tensors (default: those as they are);
    - ``training(model, options, total_steps)``: its :class:`Training` for a run of ``total_steps`` steps;
    - ``variant``: (config key, label) pairs that name a variant in run names and report groups, e.g.
      ``(("prefix_length", "P"),)``; ``uses_prefix_length``: whether it reads the top-level ``prefix_length``.
    """

    name: str
    summary: str  # what trains, for the README and logs
    build: Callable[[DictConfig, SequenceClassifier], nn.Module]
    options: type | None = None
    section: str = ""
    check: Callable[[Any], None] | None = None
    export: Callable[[nn.Module, dict[str, torch.Tensor]], Exported] | None = None
    training: Callable[[nn.Module, Any, int], Training] | None = None
    variant: tuple[tuple[str, str], ...] = ()
    uses_prefix_length: bool = False

    def __post_init__(self) -> None:
        if self.options is not None and not self.section:
            object.__setattr__(self, "section", self.name)

    def options_of(self, cfg: DictConfig) -> Any:
        """Its section of ``cfg``, typed by ``options`` (the defaults where ``cfg`` has none); None without."""
        if self.options is None:
            return None
        found = cfg.get(self.section)
        return found if found is not None else OmegaConf.structured(self.options)


def variant_of(keys: tuple[tuple[str, str], ...], value_of: Callable[[str], Any]) -> tuple[tuple[str, str], ...]:
    """(label, value as text) for each of the variant ``keys`` that is set. ``value_of(key)`` reads a config or a
    run's MLflow params, where a list is its Python text; a list reads ``key+value``."""
    parts = []
    for key, label in keys:
        value = value_of(key)
        if isinstance(value, str) and value.startswith("["):
            with contextlib.suppress(ValueError, SyntaxError):
                value = ast.literal_eval(value)
        if value is None or value == "None":
            continue
        text = str(value) if isinstance(value, (str, int, float)) else "+".join(str(v) for v in value)
        parts.append((label, text))
    return tuple(parts)


def variant_label(parts: tuple[tuple[str, str], ...]) -> str:
    """``P=20``, ``r=8``, ``key+value`` (an empty label): how the report names a variant."""
    return " ".join(f"{label}={text}" if label else text for label, text in parts)


def check_position_budget(cfg: DictConfig, classifier: SequenceClassifier) -> None:
    """P extra positions plus data.max_length tokens must fit the model's position embeddings (data.max_length alone
    was checked to fit by :func:`ptexp.experiment.check_max_length`)."""
    from ptexp.models import position_budget

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


def repeat_to_length(ids: list[int], length: int, key: str) -> list[int]:
    """``ids`` repeated to ``length`` tokens (a prefix or prompt initialised from text); ``key`` names the text."""
    if not ids:
        raise UserError(f"{key}: the text has no tokens; valid: a non-empty text")
    return [ids[i % len(ids)] for i in range(length)]


def vocab_token_ids(vocab_size: int, length: int) -> list[int]:
    """``length`` token ids drawn uniformly with torch's global generator (so seeded by the run's seed), skipping
    [PAD], [unused*] and the other reserved rows at the start of BERT vocabularies (prefix and prompt init)."""
    import torch

    low = min(1000, vocab_size // 2)
    return torch.randint(low, vocab_size, (length,)).tolist()

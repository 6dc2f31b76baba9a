"""Shared by the methods that PEFT implements (LoRA, IA3): wrap the backbone, keep our head trainable."""

from __future__ import annotations

import re

from peft import PeftConfig, get_peft_model
from torch import nn

from ptexp.errors import UserError
from ptexp.families import FAMILIES
from ptexp.methods.base import freeze_all_but_head
from ptexp.models import SequenceClassifier


def linear_names(module: nn.Module) -> list[str]:
    """The distinct last name components of ``module``'s nn.Linear layers, in order (BERT: query, key, value,
    dense): what ``lora.target_modules`` / ``ia3.target_modules`` may name."""
    names = [name.rpartition(".")[2] for name, sub in module.named_modules() if isinstance(sub, nn.Linear)]
    return list(dict.fromkeys(names))


def family_names(classifier: SequenceClassifier, bert_names: list[str]) -> list[str]:
    """BERT's module names (query, key, value, output.dense) in the spelling of the backbone's family, if known."""
    model_type = getattr(classifier.config, "model_type", None)
    for family in FAMILIES:
        if model_type in family.model_types:
            return family.module_names(bert_names)
    return bert_names


def check_targets(classifier: SequenceClassifier, names: list[str], key: str) -> None:
    """One UserError unless some of ``names`` (``KEY.target_modules``) is a module of the backbone, matched as
    PEFT matches it: the whole module name or its dotted suffix."""
    backbone = classifier.backbone
    valid = f"valid: names of its linear layers, e.g. {', '.join(linear_names(backbone))}"
    if not names:
        raise UserError(f"{key}.target_modules: empty; {valid}")
    wanted = family_names(classifier, list(names))
    modules = [name for name, _ in backbone.named_modules()]
    if not any(m == w or m.endswith(f".{w}") for m in modules for w in wanted):
        raise UserError(f"{key}.target_modules: {list(names)} matches no module of {type(backbone).__name__}; {valid}")


def wrap_backbone(classifier: SequenceClassifier, peft_config: PeftConfig, key: str = "") -> SequenceClassifier:
    """Replace the backbone by PEFT's wrapper (which freezes the base weights); the head trains.

    Target modules are given in BERT's names (query, key, value, output.dense); for a known family with other
    names (DistilBERT q_lin..., DeBERTa query_proj..., MPNet q...) they are translated to its own. ``key``: the
    config section the targets come from (``lora``, ``ia3``; empty: no targets, e.g. PEFT's prefix tuning), for
    the UserError when they name no module or one PEFT cannot adapt."""
    given = list(getattr(peft_config, "target_modules", None) or [])
    if key:
        check_targets(classifier, given, key)
    for field in ("target_modules", "feedforward_modules"):
        names = getattr(peft_config, field, None)
        if isinstance(names, (list, set)):
            setattr(peft_config, field, family_names(classifier, sorted(names)))
    freeze_all_but_head(classifier)
    try:
        classifier.backbone = get_peft_model(classifier.backbone, peft_config)
    except ValueError as err:
        unsupported = re.match(r"Target module (\w+)", str(err))
        if not key or unsupported is None:
            raise
        raise UserError(
            f"{key}.target_modules: {given} names a {unsupported.group(1)}, which PEFT cannot adapt; valid: names "
            f"of its linear layers, e.g. {', '.join(linear_names(classifier.backbone))}"
        ) from None
    return classifier

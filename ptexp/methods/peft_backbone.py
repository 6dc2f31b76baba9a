"""Shared by the methods that PEFT implements (LoRA, IA3): wrap the backbone, keep our head trainable."""

from __future__ import annotations

from peft import PeftConfig, get_peft_model

from ptexp.families import FAMILIES
from ptexp.methods.base import freeze_all_but_head
from ptexp.models import SequenceClassifier


def wrap_backbone(classifier: SequenceClassifier, peft_config: PeftConfig) -> SequenceClassifier:
    """Replace the backbone by PEFT's wrapper (which freezes the base weights); the head trains.

    Target modules are given in BERT's names (query, key, value, output.dense); for a known family with other
    names (DistilBERT q_lin..., DeBERTa query_proj..., MPNet q...) they are translated to its own."""
    model_type = getattr(classifier.config, "model_type", None)
    for family in FAMILIES:
        if model_type in family.model_types:
            for field in ("target_modules", "feedforward_modules"):
                names = getattr(peft_config, field, None)
                if isinstance(names, (list, set)):
                    setattr(peft_config, field, family.module_names(sorted(names)))
    freeze_all_but_head(classifier)
    classifier.backbone = get_peft_model(classifier.backbone, peft_config)
    return classifier

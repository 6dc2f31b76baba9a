"""Shared by the methods that PEFT implements (LoRA, IA3): wrap the backbone, keep our head trainable."""

from __future__ import annotations

from peft import PeftConfig, get_peft_model

from ptexp.methods.base import freeze_all_but_head
from ptexp.models import SequenceClassifier


def wrap_backbone(classifier: SequenceClassifier, peft_config: PeftConfig) -> SequenceClassifier:
    """Replace the backbone by PEFT's wrapper (which freezes the base weights); the head trains."""
    freeze_all_but_head(classifier)
    classifier.backbone = get_peft_model(classifier.backbone, peft_config)
    return classifier

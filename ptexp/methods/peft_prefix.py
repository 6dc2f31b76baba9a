"""PEFT's own PrefixTuning, as a reference row beside ptexp's ``prefix``.

PEFT passes the prefix as ``past_key_values``; transformers 5.24 renamed that argument to ``cache``, and
PEFT (0.21.2 at least) then refuses the model. Where the installed pair cannot work together this method
stops before training with a message naming both versions. Note that PEFT's prefix shifts real tokens to
positions P..P+L-1 (ptexp's ``prefix.shift_positions=true`` does the same). Backbones that take no KV cache
at all (DistilBERT, DeBERTa-v2/v3, MPNet) are refused with a pointer to ``method=prefix``.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from ptexp.errors import UserError
from ptexp.methods import prefix
from ptexp.methods.base import MethodSpec, check_position_budget

if TYPE_CHECKING:
    from torch import nn

    from ptexp.models import SequenceClassifier


def build(cfg: DictConfig, classifier: SequenceClassifier) -> nn.Module:
    import peft
    import transformers
    from peft import PrefixTuningConfig, TaskType

    from ptexp.methods.peft_backbone import wrap_backbone

    check_position_budget(cfg, classifier)
    backbone = classifier.backbone
    parameters = inspect.signature(backbone.forward).parameters
    if "past_key_values" not in parameters and "cache" not in parameters:
        raise UserError(
            f"method=peft_prefix: PEFT's prefix tuning goes through a KV cache, which {type(backbone).__name__} "
            "does not take; valid: method=prefix (ptexp's own enters at each attention module)"
        )
    if "past_key_values" not in parameters:
        raise UserError(
            f"method=peft_prefix: PEFT {peft.__version__} prefix tuning passes past_key_values, which "
            f"{type(backbone).__name__}.forward in transformers {transformers.__version__} no longer takes "
            "(renamed to cache in 5.24); valid: method=prefix (ptexp's own), or transformers < 5.24"
        )
    config = classifier.config
    peft_config = PrefixTuningConfig(
        task_type=TaskType.FEATURE_EXTRACTION,
        num_virtual_tokens=int(cfg.prefix_length),
        num_layers=config.num_hidden_layers,
        token_dim=config.hidden_size,
        num_attention_heads=config.num_attention_heads,
        prefix_projection=bool(cfg.prefix.projection),
        encoder_hidden_size=int(cfg.prefix.projection_hidden),
    )
    return wrap_backbone(classifier, peft_config)


METHOD = MethodSpec(
    name="peft_prefix",
    summary="PEFT's PrefixTuning (reference row; needs transformers < 5.24 with PEFT <= 0.21)",
    build=build,
    options=prefix.PrefixOptions,
    section="prefix",  # its projection options are prefix's
    check=prefix.check,
    variant=(("prefix_length", "P"),),
    uses_prefix_length=True,
)

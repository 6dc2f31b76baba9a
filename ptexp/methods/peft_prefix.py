"""PEFT's own PrefixTuning, as a reference row beside ptexp's ``prefix``.

PEFT passes the prefix to the backbone as a KV cache, under the argument name that the installed transformers
uses: ``past_key_values`` until 5.23, ``cache`` from 5.24 on. PEFT 0.22 looks that name up
(``peft.import_utils.get_transformers_cache_name``); older PEFT always passes ``past_key_values``. This method
checks that the backbone's ``forward`` takes the name PEFT will pass and, where it does not (an older PEFT on
transformers >= 5.24), stops before training with one line naming both versions. Backbones that take no KV
cache at all (DistilBERT, DeBERTa-v2/v3, MPNet) are refused with a pointer to ``method=prefix``. PEFT's prefix
shifts real tokens to positions P..P+L-1 (ptexp's ``prefix.shift_positions=true`` does the same; a test checks
that the two give the same hidden states).
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

CACHE_NAMES = ("past_key_values", "cache")  # transformers' KV-cache argument, before and from 5.24


def cache_argument() -> str:
    """The name under which the installed PEFT passes its prefix to the backbone."""
    try:
        from peft.import_utils import get_transformers_cache_name  # PEFT >= 0.22
    except ImportError:
        return "past_key_values"
    return get_transformers_cache_name()


def check_cache_argument(backbone: nn.Module) -> None:
    """One UserError unless ``backbone.forward`` takes the KV-cache argument that PEFT passes."""
    import peft
    import transformers

    parameters = inspect.signature(backbone.forward).parameters
    if not any(name in parameters for name in CACHE_NAMES):
        raise UserError(
            f"method=peft_prefix: PEFT's prefix tuning goes through a KV cache, which {type(backbone).__name__} "
            "does not take; valid: method=prefix (ptexp's own enters at each attention module)"
        )
    name = cache_argument()
    if name not in parameters:
        raise UserError(
            f"method=peft_prefix: PEFT {peft.__version__} passes its prefix as {name}, which "
            f"{type(backbone).__name__}.forward in transformers {transformers.__version__} does not take; "
            "valid: method=prefix (ptexp's own), or PEFT >= 0.22 (it passes the name transformers uses)"
        )


def build(cfg: DictConfig, classifier: SequenceClassifier) -> nn.Module:
    from peft import PrefixTuningConfig, TaskType

    from ptexp.methods.peft_backbone import wrap_backbone

    check_position_budget(cfg, classifier)
    check_cache_argument(classifier.backbone)
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
    summary="PEFT's PrefixTuning (reference row; PEFT >= 0.22 on transformers >= 5.24)",
    build=build,
    options=prefix.PrefixOptions,
    section="prefix",  # its projection options are prefix's
    check=prefix.check,
    variant=(("prefix_length", "P"),),
    uses_prefix_length=True,
)

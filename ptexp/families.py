"""The encoder families ptexp knows: where each keeps its layers, self-attention and projections.

Prefix tuning needs this map (``ptexp.prefix_attention`` puts the prefix in at each self-attention module);
the classifier needs only ``takes_token_types``. A backbone whose ``config.model_type`` is not listed here
still loads and trains with the other methods; ``method=prefix`` refuses it with the list of known families.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from enum import Enum

from torch import nn

from ptexp.errors import UserError


class Entry(str, Enum):
    """How the prefix reaches a family's self-attention."""

    interface = "interface"  # transformers' attention-function interface (eager, sdpa, ...): K/V concatenated there
    mpnet = "mpnet"  # MPNet's own attention, with its relative position bias
    deberta = "deberta"  # DeBERTa-v2/v3's disentangled attention


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]  # config.model_type values
    layers: str  # dotted path from the backbone to its ModuleList of layers
    attention: str  # dotted path from a layer to its self-attention module
    key: str  # the key projection (nn.Linear) inside the self-attention
    value: str  # the value projection
    entry: Entry
    query: str = "query"  # the query projection
    ffn_output: str = "output.dense"  # the feed-forward output projection (suffix of its module name)

    def module_names(self, bert_names: list[str]) -> list[str]:
        """BERT's module names (query, key, value, output.dense: LoRA / IA3 targets) in this family's spelling."""
        spelling = {"query": self.query, "key": self.key, "value": self.value, "output.dense": self.ffn_output}
        return [spelling.get(name, name) for name in bert_names]


_BERT_LIKE = {"layers": "encoder.layer", "attention": "attention.self", "key": "key", "value": "value"}
# fmt: off
FAMILIES: tuple[Family, ...] = (
    Family("bert", ("bert",), entry=Entry.interface, **_BERT_LIKE),
    Family("roberta", ("roberta", "xlm-roberta", "camembert"), entry=Entry.interface, **_BERT_LIKE),
    Family("electra", ("electra",), entry=Entry.interface, **_BERT_LIKE),
    Family("distilbert", ("distilbert",), "transformer.layer", "attention", "k_lin", "v_lin", Entry.interface,
           query="q_lin", ffn_output="ffn.lin2"),
    Family("deberta-v2", ("deberta-v2",), "encoder.layer", "attention.self", "key_proj", "value_proj", Entry.deberta,
           query="query_proj"),
    Family("mpnet", ("mpnet",), "encoder.layer", "attention.attn", "k", "v", Entry.mpnet, query="q"),
)
# fmt: on


def known_model_types() -> list[str]:
    return [model_type for family in FAMILIES for model_type in family.model_types]


def family_of(backbone: nn.Module, key: str = "method=prefix") -> Family:
    """The family of ``backbone``, or one UserError naming the model types ptexp knows."""
    model_type = getattr(backbone.config, "model_type", None)
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    raise UserError(
        f"{key}: ptexp does not know the encoder family {model_type!r} ({type(backbone).__name__}); "
        f"valid: a backbone of model_type {', '.join(known_model_types())}"
    )


def self_attentions(backbone: nn.Module, family: Family) -> list[nn.Module]:
    """Each layer's self-attention module, bottom layer first."""
    return [layer.get_submodule(family.attention) for layer in backbone.get_submodule(family.layers)]


def takes_token_types(backbone: nn.Module) -> bool:
    """Whether the backbone reads token type ids: its forward takes them and it has more than one type.

    With ``type_vocab_size`` 1 (roberta-base) the only valid id is 0, which is also what the model uses when
    given none; DistilBERT and MPNet have no token types; DeBERTa-v3 has ``type_vocab_size`` 0.
    """
    if "token_type_ids" not in inspect.signature(backbone.forward).parameters:
        return False
    return int(getattr(backbone.config, "type_vocab_size", 0) or 0) > 1

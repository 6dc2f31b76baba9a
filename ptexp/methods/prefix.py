"""Prefix tuning (Li & Liang 2021; P-Tuning v2): learned key/value prefixes in every attention layer.

Each layer l gets P extra key and value vectors that every real token can attend to. They go in at each
self-attention module (``ptexp.prefix_attention``), in front of the real keys and values, with the attention
mask (and MPNet's / DeBERTa's relative position terms) padded by P columns. The token sequence is untouched,
so every family keeps its own position ids, token types and relative positions: real tokens sit where they
sit without a prefix. The backbone is frozen; the prefix and the head train. Families: ``ptexp.families``.

``prefix.shift_positions=true`` moves real tokens to the family's own positions + P, as PEFT's prefix
tuning does through the KV cache, so its effect can be measured (families with absolute positions only).

``prefix.layers=k`` puts prefixes in the top k layers only; the layers below run as without a prefix.

``prefix.init``: ``random`` (normal, init_std), ``zero``, or the frozen backbone's own activations: ``tokens`` and
``vocab`` run P tokens (init_text's, repeated to P; or P drawn from the vocabulary) through the backbone as one
sequence without special tokens and take, per layer, what its key and value projections compute for them.

Trainable parameters: prefixed layers x 2 x P x hidden for the plain prefix; with ``prefix.projection`` an
embedding (P x hidden) feeds an MLP hidden -> projection_hidden -> layers x 2 x hidden (with biases).
The classification head trains too. The model: :mod:`ptexp.methods.prefix_model`; a projected prefix is saved
collapsed (:func:`export`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from ptexp.errors import need
from ptexp.methods.base import MethodSpec, check_position_budget, repeat_to_length, vocab_token_ids

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ptexp.adapters import Exported
    from ptexp.models import SequenceClassifier


class PrefixInit(str, Enum):
    random = "random"  # normal(0, init_std)
    zero = "zero"  # all zeros
    tokens = "tokens"  # the frozen model's own keys/values for init_text (Li & Liang's real-word init)
    vocab = "vocab"  # the frozen model's own keys/values for P tokens drawn from the vocabulary (seeded)


@dataclass
class PrefixOptions:
    """Options of prefix tuning; the length is the top-level ``prefix_length``."""

    projection: bool = False  # reparameterise the prefix through an MLP (Li & Liang 2021)
    projection_hidden: int = 512
    dropout: float = 0.0  # dropout on the prefix keys and values while training
    init: PrefixInit = PrefixInit.random
    init_std: float = 0.02  # std of the normal init of the prefix (or of its embedding with projection)
    init_text: str = "this movie review is positive or negative"  # for init=tokens
    shift_positions: bool = False  # False: real tokens keep positions 0..L-1; True: P..P+L-1 as in PEFT
    layers: int | None = None  # None: every layer; k: only the top k layers get a prefix


def check(options: PrefixOptions) -> None:
    need(0 <= options.dropout < 1, "prefix.dropout", f"{options.dropout}", "0 <= p < 1")
    need(options.projection_hidden > 0, "prefix.projection_hidden", "must be positive", "an integer > 0")
    init = PrefixInit(options.init)
    need(
        not (options.projection and init in (PrefixInit.tokens, PrefixInit.vocab)),
        "prefix.init",
        f"{init.value} cannot initialise a projected prefix",
        "prefix.init=random or zero with prefix.projection=true",
    )
    need(options.init_std > 0, "prefix.init_std", f"{options.init_std}", "a number > 0, e.g. 0.02")


def init_token_ids(cfg: DictConfig, classifier: SequenceClassifier, length: int) -> list[int]:
    """The tokens whose keys and values initialise the prefix: init_text's (repeated to P) or P drawn ones."""
    from ptexp.models import load_tokenizer

    if PrefixInit(cfg.prefix.init) == PrefixInit.vocab:
        return vocab_token_ids(classifier.backbone.get_input_embeddings().weight.shape[0], length)
    ids = load_tokenizer(cfg.model)(cfg.prefix.init_text, add_special_tokens=False)["input_ids"]
    return repeat_to_length(ids, length, "prefix.init_text")


def build(cfg: DictConfig, classifier: SequenceClassifier) -> nn.Module:
    import torch

    from ptexp.methods.prefix_model import PrefixTuningModel, token_key_values

    if cfg.prefix.shift_positions:  # only shifted real tokens use positions beyond the sequence's own
        check_position_budget(cfg, classifier)
    model = PrefixTuningModel(classifier, int(cfg.prefix_length), cfg.prefix)
    init, encoder = PrefixInit(cfg.prefix.init), model.prefix_encoder
    with torch.no_grad():
        if init == PrefixInit.zero:
            for param in encoder.parameters():
                param.zero_()
        elif init in (PrefixInit.tokens, PrefixInit.vocab) and model.length > 0:
            ids = init_token_ids(cfg, classifier, model.length)
            encoder.prefix.copy_(token_key_values(classifier.backbone, model.family, ids)[model.first_prefixed :])
    return model


def export(model: nn.Module, tensors: dict[str, torch.Tensor]) -> Exported:
    """A projected prefix is saved as the plain (layers, 2, P, hidden) prefix its MLP gives, so inference needs no
    MLP; ``ptexp.evaluate`` rebuilds the model with ``prefix.projection=false`` to load it."""
    import torch

    from ptexp.adapters import Exported

    encoder = model.prefix_encoder
    if not encoder.projection:
        return Exported(tensors)
    kept = {name: t for name, t in tensors.items() if not name.startswith("prefix_encoder.")}
    with torch.no_grad():
        kept["prefix_encoder.prefix"] = encoder.key_values().detach().cpu().contiguous()
    return Exported(kept, rebuild={"prefix.projection": False})


METHOD = MethodSpec(
    name="prefix",
    summary="per-layer key/value prefixes (layers x 2 x P x hidden) + head; backbone frozen",
    build=build,
    options=PrefixOptions,
    check=check,
    export=export,
    variant=(("prefix_length", "P"),),
    uses_prefix_length=True,
)

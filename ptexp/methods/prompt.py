"""Soft prompt tuning (Lester et al. 2021): P learned vectors at the input embeddings only.

The prompt goes right after [CLS] ([CLS] p_1..p_P tokens... [SEP]), so BERT's pooler still reads [CLS];
the prompt vectors take the place of word embeddings and get position and token-type embeddings like any
input token: the backbone numbers positions its own way for ``inputs_embeds`` (BERT 0.., RoBERTa/MPNet from
padding_idx + 1), so real tokens sit P places later, as with PEFT's prompt tuning; the prompt's token type
is 0. Mean pooling covers only the real tokens. The backbone is frozen; the prompt (P x hidden) and the head train.
The model: :mod:`ptexp.methods.prompt_model`.
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

    from ptexp.models import SequenceClassifier


class PromptInit(str, Enum):
    random = "random"  # normal(0, init_std)
    vocab = "vocab"  # embeddings of random vocabulary tokens
    text = "text"  # embeddings of init_text's tokens, repeated to the prompt length


@dataclass
class PromptOptions:
    """Soft prompt tuning (Lester et al. 2021); the length is the top-level ``prefix_length``."""

    init: PromptInit = PromptInit.vocab
    init_std: float = 0.02
    init_text: str = "this movie review is positive or negative"  # for init=text


def check(options: PromptOptions) -> None:
    need(options.init_std > 0, "prompt.init_std", f"{options.init_std}", "a number > 0, e.g. 0.02")


def initial_prompt(
    cfg: DictConfig, classifier: SequenceClassifier, length: int, options: PromptOptions
) -> torch.Tensor:
    import torch

    from ptexp.models import load_tokenizer

    embedding = classifier.backbone.get_input_embeddings().weight.detach()
    init = PromptInit(options.init)
    if init == PromptInit.random:
        return torch.randn(length, embedding.shape[1]) * options.init_std
    if init == PromptInit.vocab:
        return embedding[vocab_token_ids(embedding.shape[0], length)].clone()
    ids = load_tokenizer(cfg.model)(options.init_text, add_special_tokens=False)["input_ids"]
    return embedding[repeat_to_length(ids, length, "prompt.init_text")].clone()


def build(cfg: DictConfig, classifier: SequenceClassifier) -> nn.Module:
    from ptexp.methods.prompt_model import PromptTuningModel

    check_position_budget(cfg, classifier)
    length = int(cfg.prefix_length)
    return PromptTuningModel(classifier, length, initial_prompt(cfg, classifier, length, cfg.prompt))


METHOD = MethodSpec(
    name="prompt",
    summary="P x hidden soft prompt at the input embeddings + head; backbone frozen",
    build=build,
    options=PromptOptions,
    check=check,
    variant=(("prefix_length", "P"),),
    uses_prefix_length=True,
)

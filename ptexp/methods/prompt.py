"""Soft prompt tuning (Lester et al. 2021): P learned vectors at the input embeddings only.

The prompt goes right after [CLS] ([CLS] p_1..p_P tokens... [SEP]), so BERT's pooler still reads [CLS];
the prompt vectors take the place of word embeddings and get position and token-type embeddings like any
input token: the backbone numbers positions its own way for ``inputs_embeds`` (BERT 0.., RoBERTa/MPNet from
padding_idx + 1), so real tokens sit P places later, as with PEFT's prompt tuning; the prompt's token type
is 0. Mean pooling covers only the real tokens. The backbone is frozen; the prompt (P x hidden) and the head train.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import nn

from ptexp.config import PromptInit, PromptOptions
from ptexp.methods.base import MethodSpec, check_position_budget, freeze_all_but_head
from ptexp.methods.prefix import repeat_to_length, vocab_token_ids
from ptexp.models import SequenceClassifier, load_tokenizer


class PromptTuningModel(nn.Module):
    """A frozen-backbone classifier whose input carries P learned embeddings after [CLS]."""

    def __init__(self, classifier: SequenceClassifier, length: int, init_embeddings: torch.Tensor):
        super().__init__()
        self.classifier = classifier
        self.length = length
        self.prompt = nn.Parameter(init_embeddings.clone())  # (P, hidden)
        freeze_all_but_head(classifier)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        batch = input_ids.shape[0]
        words = self.classifier.backbone.get_input_embeddings()(input_ids)
        prompt = self.prompt.unsqueeze(0).expand(batch, -1, -1).to(words.dtype)
        inputs = {"inputs_embeds": self.after_first(words, prompt)}
        inputs["attention_mask"] = self.after_first(attention_mask, 1)
        if token_type_ids is not None and self.classifier.token_types:
            inputs["token_type_ids"] = self.after_first(token_type_ids, 0)  # the prompt has type 0, the first segment's
        out = self.classifier.backbone(**inputs)
        hidden = out.last_hidden_state
        real = torch.cat([hidden[:, :1], hidden[:, 1 + self.length :]], dim=1)  # drop the prompt positions
        return self.classifier.classify(real, getattr(out, "pooler_output", None), attention_mask)

    def after_first(self, tokens: torch.Tensor, prompt: torch.Tensor | int) -> torch.Tensor:
        """``tokens`` (B, L, ...) with ``prompt`` (B, P, ...), or P copies of a fill value, after the first token."""
        if isinstance(prompt, int):
            prompt = tokens.new_full((tokens.shape[0], self.length), prompt)
        return torch.cat([tokens[:, :1], prompt, tokens[:, 1:]], dim=1)


def initial_prompt(cfg: DictConfig, classifier: SequenceClassifier, length: int, options: PromptOptions):
    embedding = classifier.backbone.get_input_embeddings().weight.detach()
    init = PromptInit(options.init)
    if init == PromptInit.random:
        return torch.randn(length, embedding.shape[1]) * options.init_std
    if init == PromptInit.vocab:
        return embedding[vocab_token_ids(embedding.shape[0], length)].clone()
    ids = load_tokenizer(cfg.model)(options.init_text, add_special_tokens=False)["input_ids"]
    return embedding[repeat_to_length(ids, length, "prompt.init_text")].clone()


def build(cfg: DictConfig, classifier: SequenceClassifier) -> nn.Module:
    check_position_budget(cfg, classifier)
    length = int(cfg.prefix_length)
    return PromptTuningModel(classifier, length, initial_prompt(cfg, classifier, length, cfg.prompt))


METHOD = MethodSpec(
    name="prompt",
    summary="P x hidden soft prompt at the input embeddings + head; backbone frozen",
    build=build,
    uses_prefix_length=True,
)

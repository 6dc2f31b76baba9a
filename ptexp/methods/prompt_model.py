"""Soft prompt tuning's model (:mod:`ptexp.methods.prompt`): P learned vectors after [CLS] at the input embeddings."""

from __future__ import annotations

import torch
from torch import nn

from ptexp.methods.base import freeze_all_but_head
from ptexp.models import SequenceClassifier


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

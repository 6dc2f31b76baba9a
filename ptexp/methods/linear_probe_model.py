"""The linear probe's model (:mod:`ptexp.methods.linear_probe`).

The frozen backbone runs once per distinct example: its pooled sentence vector is computed in eval mode
(no dropout, no gradients) the first time a text (or sentence pair, keyed with its token types) is seen and
memoised, so every later epoch and every later evaluation of that example costs only the head.
Training and evaluation keep separate memos, because tensors made under ``torch.inference_mode``
(evaluation) cannot take part in autograd.
"""

from __future__ import annotations

import torch
from torch import nn

from ptexp.models import SequenceClassifier


class CachedFeatureProbe(nn.Module):
    """A :class:`SequenceClassifier` whose frozen features are computed once per example.

    It registers the classifier's own ``backbone``, ``dropout`` and ``head``, so parameter names, adapters
    and counts are the same as the plain classifier's.
    """

    def __init__(self, classifier: SequenceClassifier):
        super().__init__()
        self.backbone, self.dropout, self.head = classifier.backbone, classifier.dropout, classifier.head
        self._features = classifier.features
        self._memo: dict[bool, dict[tuple, torch.Tensor]] = {False: {}, True: {}}
        self.backbone_rows = 0  # examples the backbone actually ran on (for tests and curiosity)

    @property
    def config(self):
        return self.backbone.config

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        memo = self._memo[torch.is_inference_mode_enabled()]
        keys = [self.key(i, input_ids, attention_mask, token_type_ids) for i in range(len(input_ids))]
        missing: dict[tuple, int] = {}  # a new example -> its first row in this batch
        for row, key in enumerate(keys):
            if key not in memo:
                missing.setdefault(key, row)
        if missing:
            rows = list(missing.values())
            types = None if token_type_ids is None else token_type_ids[rows]
            self.features_for(input_ids[rows], attention_mask[rows], types, list(missing), memo)
        return self.head(self.dropout(torch.stack([memo[key] for key in keys])))

    @staticmethod
    def key(row: int, input_ids, attention_mask, token_type_ids) -> tuple:
        """An example's identity: its real tokens and, for a sentence pair, their token types."""
        real = attention_mask[row].bool()
        ids = tuple(input_ids[row][real].tolist())
        return ids if token_type_ids is None else (ids, tuple(token_type_ids[row][real].tolist()))

    def features_for(self, input_ids, attention_mask, token_type_ids, keys, memo) -> None:
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            with torch.no_grad():
                pooled = self._features(input_ids, attention_mask, token_type_ids)
        finally:
            self.backbone.train(was_training)
        memo.update(zip(keys, pooled, strict=True))
        self.backbone_rows += len(keys)

"""Linear probe: the backbone is frozen; only the classification head trains.

The frozen backbone runs once per distinct example: its pooled sentence vector is computed in eval mode
(no dropout, no gradients) the first time a text is seen and memoised, so every later epoch and every later
evaluation of that text costs only the head. Training and evaluation keep separate memos, because tensors
made under ``torch.inference_mode`` (evaluation) cannot take part in autograd.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import nn

from ptexp.methods.base import MethodSpec, freeze_all_but_head
from ptexp.models import SequenceClassifier


class CachedFeatureProbe(nn.Module):
    """A :class:`SequenceClassifier` whose frozen features are computed once per example.

    It registers the classifier's own ``backbone``, ``dropout`` and ``head``, so parameter names, adapters
    and counts are the same as the plain classifier's.
    """

    def __init__(self, classifier: SequenceClassifier):
        super().__init__()
        self.backbone, self.dropout, self.head = classifier.backbone, classifier.dropout, classifier.head
        self._pool = classifier.pool
        self._memo: dict[bool, dict[tuple[int, ...], torch.Tensor]] = {False: {}, True: {}}
        self.backbone_rows = 0  # examples the backbone actually ran on (for tests and curiosity)

    @property
    def config(self):
        return self.backbone.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        memo = self._memo[torch.is_inference_mode_enabled()]
        keys = [tuple(row[mask.bool()].tolist()) for row, mask in zip(input_ids, attention_mask, strict=True)]
        missing: dict[tuple[int, ...], int] = {}  # a new text -> its first row in this batch
        for row, key in enumerate(keys):
            if key not in memo:
                missing.setdefault(key, row)
        if missing:
            rows = list(missing.values())
            self.features_for(input_ids[rows], attention_mask[rows], list(missing), memo)
        return self.head(self.dropout(torch.stack([memo[key] for key in keys])))

    def features_for(self, input_ids, attention_mask, keys, memo) -> None:
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            with torch.no_grad():
                out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
                pooled = self._pool(out.last_hidden_state, out.pooler_output, attention_mask)
        finally:
            self.backbone.train(was_training)
        memo.update(zip(keys, pooled, strict=True))
        self.backbone_rows += len(keys)


def build(cfg: DictConfig, classifier: SequenceClassifier) -> nn.Module:
    freeze_all_but_head(classifier)
    return CachedFeatureProbe(classifier)


METHOD = MethodSpec(
    name="linear_probe",
    summary="the classification head only; backbone frozen, its features computed once per example",
    build=build,
)

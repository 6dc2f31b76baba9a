"""One experiment before it trains: its config checked against the method registry, and its data, tokenizer and
model built (for the trainer, and for ``ptexp.evaluate``, which rebuilds a run's model)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn
from transformers import PreTrainedTokenizerBase

from ptexp import checks
from ptexp.adapters import backbone_fingerprint
from ptexp.data import Dataset, load_dataset
from ptexp.encoding import planned_steps
from ptexp.errors import UserError
from ptexp.methods import METHODS, Training, build_model, start_training
from ptexp.models import SequenceClassifier, load_backbone, load_tokenizer


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
    _replace(cfg, "trainer.epochs", cfg.trainer.task_epochs.get(task, {}).get(method),
             f"trainer.task_epochs.{task}.{method}", "this task and method")  # fmt: skip
    _replace(cfg, "optimizer.lr", cfg.optimizer.task_lr.get(task, {}).get(method), f"optimizer.task_lr.{task}.{method}",
             "this task and method")  # fmt: skip


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
    fingerprint = backbone_fingerprint(backbone)
    classifier = SequenceClassifier(backbone, dataset.num_labels, cfg.model.pooling, cfg.model.classifier_dropout)
    return Experiment(dataset, tokenizer, build_model(cfg, classifier).to(device), fingerprint)


def set_up_training(cfg: DictConfig, built: Experiment) -> Training:
    """The method's part in training ``built``, for the steps the run will take (a UserError when its options do not
    fit that count): called before the run is tracked, so that such a mistake leaves nothing behind."""
    return start_training(cfg, built.model, planned_steps(len(built.dataset.train), cfg.trainer))

"""Checks across config keys that the schemas alone cannot express; each raises a one-line UserError."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig

from ptexp.config import DataSource, Precision, PrefixInit, Task
from ptexp.errors import UserError


def validate_trainer_and_tracking(cfg: DictConfig) -> None:
    """The trainer's and tracking's checks: cheap (no torch), so the CLI runs them before loading anything."""

    def need(ok: bool, key: str, problem: str, valid: str) -> None:
        if not ok:
            raise UserError(f"{key}: {problem}; valid: {valid}")

    t = cfg.trainer
    need(t.epochs > 0, "trainer.epochs", f"{t.epochs}", "a number > 0, e.g. 3 or 1.5")
    for method, epochs in t.method_epochs.items():
        need(epochs > 0, f"trainer.method_epochs.{method}", f"{epochs}", "a number > 0, e.g. 3 or 1.5")
    need(t.max_steps is None or t.max_steps >= 1, "trainer.max_steps", f"{t.max_steps}", "null or >= 1")
    need(t.batch_size >= 1, "trainer.batch_size", f"{t.batch_size}", "an integer >= 1")
    need(t.eval_batch_size >= 1, "trainer.eval_batch_size", f"{t.eval_batch_size}", "an integer >= 1")
    need(t.eval_every >= 0, "trainer.eval_every", f"{t.eval_every}", "0 (per epoch) or a step count")
    need(t.log_every >= 1, "trainer.log_every", f"{t.log_every}", "an integer >= 1")
    need(t.grad_clip is None or t.grad_clip > 0, "trainer.grad_clip", f"{t.grad_clip}", "null or > 0")
    need(t.threads is None or t.threads >= 1, "trainer.threads", f"{t.threads}", "null or >= 1")
    need(
        str(getattr(t.precision, "value", t.precision)) in {p.value for p in Precision},
        "trainer.precision",
        f"{t.precision!r}",
        ", ".join(p.value for p in Precision),
    )
    need(t.dist_timeout_s >= 1, "trainer.dist_timeout_s", f"{t.dist_timeout_s}", "seconds, an integer >= 1")
    need(t.checkpoint_every >= 0, "trainer.checkpoint_every", f"{t.checkpoint_every}", "0 (epoch ends) or a step count")
    need(
        isinstance(t.resume, (bool, str)) and t.resume != "",
        "trainer.resume",
        f"{t.resume!r}",
        "false, true, a run folder, or an MLflow run id",
    )
    need(bool(cfg.tracking.experiment.strip()), "tracking.experiment", "empty", "a non-empty experiment name")


def validate(cfg: DictConfig, methods: Mapping[str, Any]) -> None:
    """Checks across keys that the schema alone cannot express. Raises UserError. ``methods``: the method registry
    (name -> spec with ``uses_prefix_length``), passed in by :func:`ptexp.experiment.validate` so that this module
    stays below the methods."""

    def need(ok: bool, key: str, problem: str, valid: str) -> None:
        if not ok:
            raise UserError(f"{key}: {problem}; valid: {valid}")

    need(cfg.method.name in methods, "method.name", f"unknown method {cfg.method.name!r}", ", ".join(methods))
    if methods[cfg.method.name].uses_prefix_length:
        need(cfg.prefix_length is not None, "prefix_length", "missing", "an integer >= 0")
        need(cfg.prefix_length >= 0, "prefix_length", f"{cfg.prefix_length} is negative", "an integer >= 0")
    if cfg.prefix is not None:
        p = cfg.prefix
        need(0 <= p.dropout < 1, "prefix.dropout", f"{p.dropout}", "0 <= p < 1")
        need(p.projection_hidden > 0, "prefix.projection_hidden", "must be positive", "an integer > 0")
        need(
            not (p.projection and p.init == PrefixInit.tokens),
            "prefix.init",
            "tokens cannot initialise a projected prefix",
            "prefix.init=random or zero with prefix.projection=true",
        )
    dropout = cfg.model.classifier_dropout
    need(0 <= dropout < 1, "model.classifier_dropout", f"{dropout}", "0 <= p < 1")
    if cfg.lora is not None:
        need(cfg.lora.r >= 1, "lora.r", f"{cfg.lora.r}", "an integer >= 1")
        need(0 <= cfg.lora.dropout < 1, "lora.dropout", f"{cfg.lora.dropout}", "0 <= p < 1")
    validate_trainer_and_tracking(cfg)
    for method in cfg.trainer.method_epochs:
        need(method in methods, f"trainer.method_epochs.{method}", "unknown method", ", ".join(methods))
    o, d = cfg.optimizer, cfg.data
    need(o.lr > 0, "optimizer.lr", f"{o.lr}", "a positive float such as 3e-5")
    need(o.weight_decay >= 0, "optimizer.weight_decay", f"{o.weight_decay}", ">= 0")
    need(0 <= o.warmup_ratio < 1, "optimizer.warmup_ratio", f"{o.warmup_ratio}", "0 <= r < 1")
    need(len(o.betas) == 2, "optimizer.betas", f"{list(o.betas)}", "two floats, e.g. [0.9,0.999]")
    need(d.max_length >= 2, "data.max_length", f"{d.max_length}", "an integer >= 2")
    if d.task == Task.classification:
        need(len(d.label_names) >= 2, "data.label_names", f"{list(d.label_names)}", "at least two names")
    if d.source == DataSource.files:
        for key in ("train_file", "eval_file"):
            need(
                bool(d[key]),
                f"data.{key}",
                "required with data=files",
                "a path to a .tsv, .csv or .jsonl file",
            )
    for key in ("max_train_samples", "max_eval_samples"):
        value = d[key]
        need(value is None or value >= 1, f"data.{key}", f"{value}", "null or an integer >= 1")

"""Checks across config keys that the schemas alone cannot express; each raises a one-line UserError."""

from __future__ import annotations

import contextlib
import stat
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ptexp.config import CONF_DIR, DataSource, Precision, Task
from ptexp.errors import UserError, need


@cache
def data_presets() -> dict[str, str]:
    """conf/data's presets: file name -> the ``data.name`` it sets, also through its defaults (glue_sst2 -> sst2)."""

    def name(stem: str) -> str | None:
        node = OmegaConf.load(CONF_DIR / "data" / f"{stem}.yaml")
        if "name" in node:
            return str(node.name)
        defaults = [d for d in node.get("defaults", []) if isinstance(d, str)]
        presets = [d for d in defaults if (CONF_DIR / "data" / f"{d}.yaml").is_file()]  # not base/glue@_here_
        return name(presets[-1]) if presets else None

    return {f.stem: found for f in sorted((CONF_DIR / "data").glob("*.yaml")) if (found := name(f.stem)) is not None}


def task_key_matches(key: str, data_name: str) -> bool:
    """Whether a key of ``optimizer.task_lr`` / ``trainer.task_epochs`` names the task ``data.name=data_name``: that
    name itself, or a data preset that sets it (glue_sst2 for sst2)."""
    return key == data_name or data_presets().get(key) == data_name


def folder_problem(folder: str) -> str | None:
    """Why ``folder`` cannot be made (e.g. under /proc, or a file in the way), or None. Creates the folders it
    lacks and removes them again, so that nothing is left behind. Safe when several processes (torchrun's ranks)
    check the same folder at once: a folder another one made first counts as made, and one removed under it by
    another's clean-up makes it try again; an empty folder on the path that another was still using may stay."""
    path = Path(folder).expanduser().absolute()
    for _attempt in range(20):
        made: list[Path] = []
        try:
            for parent in [*reversed(path.parents), path]:
                try:
                    parent.mkdir()
                    made.append(parent)
                except FileExistsError:
                    # one stat: FileNotFoundError if another made and removed it just now (then try again)
                    if not stat.S_ISDIR(parent.stat().st_mode):
                        return f"cannot create {folder!r} ({parent} is a file)"
            return None
        except FileNotFoundError:
            continue  # another process's clean-up removed a folder above this one just now
        except OSError as err:
            return f"cannot create {folder!r} ({err.strerror or type(err).__name__})"
        finally:
            for parent in reversed(made):
                with contextlib.suppress(OSError):  # another process is using it (or removed it) just now
                    parent.rmdir()
    return f"cannot create {folder!r} (the folders above it kept disappearing)"


def validate_trainer_and_tracking(cfg: DictConfig) -> None:
    """The trainer's and tracking's checks: cheap (no torch), so the CLI runs them before loading anything."""
    t = cfg.trainer
    need(t.epochs > 0, "trainer.epochs", f"{t.epochs}", "a number > 0, e.g. 3 or 1.5")
    per_method = {f"trainer.method_epochs.{m}": e for m, e in t.method_epochs.items()}
    per_task = {f"trainer.task_epochs.{task}.{m}": e for task, by in t.task_epochs.items() for m, e in by.items()}
    for key, epochs in (per_method | per_task).items():
        need(epochs > 0, key, f"{epochs}", "a number > 0, e.g. 3 or 1.5")
    need(t.max_steps is None or t.max_steps >= 1, "trainer.max_steps", f"{t.max_steps}", "null or >= 1")
    need(t.batch_size >= 1, "trainer.batch_size", f"{t.batch_size}", "an integer >= 1")
    need(t.eval_batch_size >= 1, "trainer.eval_batch_size", f"{t.eval_batch_size}", "an integer >= 1")
    need(t.infer_batch_size >= 1, "trainer.infer_batch_size", f"{t.infer_batch_size}", "an integer >= 1")
    need(t.infer_batches >= 0, "trainer.infer_batches", f"{t.infer_batches}", "0 (no timing) or a batch count")
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
    artifacts = cfg.tracking.artifact_root
    if artifacts and ("://" not in artifacts or artifacts.startswith("file://")):
        problem = folder_problem(artifacts.removeprefix("file://"))
        need(problem is None, "tracking.artifact_root", f"{problem}", "a folder that can be written, or null")
    run_name = cfg.tracking.run_name
    need(run_name is None or bool(run_name.strip()), "tracking.run_name", "empty", "null (automatic) or a name")
    need(
        not t.select_best or cfg.data.selection_rows is not None or cfg.data.selection_fraction is not None,
        "trainer.select_best",
        "true needs a selection split",
        "set data.selection_rows or data.selection_fraction, or trainer.select_best=false",
    )
    need(0 <= cfg.seed < 2**32, "seed", f"{cfg.seed}", "an integer 0 <= seed < 2**32")


def validate(cfg: DictConfig, methods: Mapping[str, Any]) -> None:
    """Checks across keys that the schema alone cannot express, the chosen method's own ``check`` of its options
    included. Raises UserError. ``methods``: the method registry (name -> :class:`~ptexp.methods.base.MethodSpec`),
    passed in by :func:`ptexp.experiment.validate` so that this module stays below the methods."""
    need(cfg.method.name in methods, "method.name", f"unknown method {cfg.method.name!r}", ", ".join(methods))
    spec = methods[cfg.method.name]
    if spec.uses_prefix_length:
        need(cfg.prefix_length is not None, "prefix_length", "missing", "an integer >= 0")
        need(cfg.prefix_length >= 0, "prefix_length", f"{cfg.prefix_length} is negative", "an integer >= 0")
    if spec.check is not None:
        spec.check(spec.options_of(cfg))
    need(bool(cfg.model.name.strip()), "model.name", "empty", "a short label for tags and run names, e.g. tiny")
    need(bool(cfg.data.name.strip()), "data.name", "empty", "a short label for tags and run names, e.g. sst2")
    dropout = cfg.model.classifier_dropout
    need(0 <= dropout < 1, "model.classifier_dropout", f"{dropout}", "0 <= p < 1")
    validate_trainer_and_tracking(cfg)
    for method in cfg.trainer.method_epochs:
        need(method in methods, f"trainer.method_epochs.{method}", "unknown method", ", ".join(methods))
    validate_task_table(cfg, "trainer.task_epochs", methods)
    o, d = cfg.optimizer, cfg.data
    need(o.lr > 0, "optimizer.lr", f"{o.lr}", "a positive float such as 3e-5")
    validate_task_table(cfg, "optimizer.task_lr", methods)
    for task, rates in o.task_lr.items():
        for method, lr in rates.items():
            need(lr > 0, f"optimizer.task_lr.{task}.{method}", f"{lr}", "a positive float such as 3e-5")
    need(o.weight_decay >= 0, "optimizer.weight_decay", f"{o.weight_decay}", ">= 0")
    need(0 <= o.warmup_ratio < 1, "optimizer.warmup_ratio", f"{o.warmup_ratio}", "0 <= r < 1")
    need(
        len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas),
        "optimizer.betas",
        f"{list(o.betas)}",
        "two floats 0 <= b < 1, e.g. [0.9,0.999]",
    )
    need(o.eps >= 0, "optimizer.eps", f"{o.eps}", ">= 0, e.g. 1e-8")
    need(o.momentum >= 0, "optimizer.momentum", f"{o.momentum}", ">= 0, e.g. 0.9")
    need(d.max_length >= 2, "data.max_length", f"{d.max_length}", "an integer >= 2")
    if d.task == Task.classification:
        need(len(d.label_names) >= 2, "data.label_names", f"{list(d.label_names)}", "at least two names")
        need(
            len(set(d.label_names)) == len(d.label_names),
            "data.label_names",
            f"{list(d.label_names)} repeats a name",
            "distinct names",
        )
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


def validate_task_table(cfg: DictConfig, key: str, methods: Mapping[str, Any]) -> None:
    """``optimizer.task_lr`` or ``trainer.task_epochs`` ({task: {method: value}}): every task a data.name or a data
    preset's name, every method known, and no two keys of one task (sst2 and glue_sst2) that set a method apart."""
    table = OmegaConf.select(cfg, key)
    presets = data_presets()
    tasks = sorted({*presets, *presets.values(), cfg.data.name})
    seen: dict[tuple[str, str], tuple[str, float]] = {}  # (data.name, method) -> (the key that set it, its value)
    for task, by_method in table.items():
        if task not in tasks:
            raise UserError(f"{key}.{task}: unknown task {task!r}; valid: {', '.join(tasks)}")
        for method, value in by_method.items():
            if method not in methods:
                raise UserError(f"{key}.{task}.{method}: unknown method; valid: {', '.join(methods)}")
            other, other_value = seen.setdefault((presets.get(task, task), method), (task, value))
            if other_value != value:
                raise UserError(
                    f"{key}.{task}.{method}: {value:g} differs from {key}.{other}.{method}={other_value:g} for the "
                    f"same task (data.name {presets.get(task, task)}); valid: one of the two keys"
                )

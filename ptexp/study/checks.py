"""A study's input checks, before anything runs: each mistake is one UserError (``KEY: problem; valid: ...``)."""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ptexp.errors import UserError
from ptexp.study.spec import GROUPS, Cell, grid_keys, grid_recipes, value_text

GRID_EXAMPLE = "study.grid={optimizer.lr:[1e-4,2e-4],trainer.epochs:[3]}"
_ABSENT = object()


def check_study(cells: list[Cell], study: DictConfig) -> None:
    """Seeds, budget, each cell's selection split and grid, and a budget that some recipe of every cell fits."""
    if not study.seeds:
        raise UserError("study.seeds: empty; valid: a list of seeds, e.g. study.seeds=[1,2,3]")
    if study.budget.factor <= 0:
        raise UserError(f"study.budget.factor: {study.budget.factor} is not valid; valid: a number > 0, e.g. 1.0")
    for cell in cells:
        check_selection(cell)
        check_grid(cell)
    if study.budget.rule == "none":  # a str enum: equal to its value
        return
    for task, group in by_task(cells).items():
        methods = sorted({cell.method for cell in group})
        if study.budget.reference not in methods:
            where = "/".join(task) or "the study"
            raise UserError(
                f"study.budget.reference: no cell of method={study.budget.reference} for {where}, whose chosen "
                f"recipe sets the budget; valid: one of {', '.join(methods)}, or study.budget.rule=none"
            )
        if study.budget.rule == "steps":
            check_steps_budget(group, study)


def by_task(cells: list[Cell]) -> dict[tuple[str, ...], list[Cell]]:
    """The cells that share a budget (the same axes but the method), by those axes' values."""
    groups: dict[tuple[str, ...], list[Cell]] = {}
    for cell in cells:
        groups.setdefault(tuple(value for _, value in cell.task), []).append(cell)
    return groups


def check_selection(cell: Cell) -> None:
    data = cell.cfg.data
    if data.selection_rows is None and data.selection_fraction is None:
        raise UserError(
            f"data.selection_rows: {cell.label} has no selection split, and a study scores its grid only there; "
            "valid: data.selection_rows=N or data.selection_fraction=F (rows carved from train)"
        )


def check_grid(cell: Cell) -> None:
    """The cell's grid is not empty, and each key is a config key (not a group) that takes each of its values."""
    grid = grid_keys(cell.cfg.study, cell.method)
    if not grid:
        raise UserError(
            f"study.grid: empty for method={cell.method}; valid: config keys and values, e.g. {GRID_EXAMPLE}"
        )
    own = cell.cfg.study.method_grid.get(cell.method, {})
    for key, values in grid.items():
        where = f"study.method_grid.{cell.method}.{key}" if key in own else f"study.grid.{key}"
        if not values:
            raise UserError(f"{where}: no values; valid: a list of one or more values, e.g. {GRID_EXAMPLE}")
        if key in GROUPS:
            raise UserError(f"{where}: {key} is a config group; valid: a config key (e.g. optimizer.lr), or {key}=a,b "
                            "on the command line, which makes it a cell axis")  # fmt: skip
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cell.cfg, parent, default=_ABSENT) if parent else cell.cfg
        if not OmegaConf.is_dict(node) or leaf not in node:
            keys = ", ".join(list(node)[:12]) if OmegaConf.is_dict(node) else "e.g. optimizer.lr, trainer.epochs"
            raise UserError(f"{where}: no such config key for method={cell.method}; valid: {keys}")
        for value in values:
            check_value(cell.cfg, key, value, where)


def check_value(cfg: DictConfig, key: str, value: Any, where: str) -> None:
    try:
        OmegaConf.update(cfg.copy(), key, value, merge=False)
    except Exception as err:
        first = str(err).strip().splitlines()[0]
        raise UserError(
            f"{where}: {value_text(value)!r} is not valid ({first}); valid: values of {key}'s type"
        ) from None


def steps_of(cfg: DictConfig, recipe: tuple) -> float | None:
    """Optimizer steps of a recipe when they can be told without the data: ``trainer.max_steps``, or the epochs
    times the batches of ``data.max_train_samples`` rows; None when the train rows are not capped."""
    job = cfg.copy()
    for key, value in recipe:
        OmegaConf.update(job, key, value, merge=False)
    if job.trainer.max_steps:
        return float(job.trainer.max_steps)
    rows = job.data.max_train_samples
    return None if rows is None else math.ceil(math.ceil(rows / job.trainer.batch_size) * job.trainer.epochs)


def check_steps_budget(group: list[Cell], study: DictConfig) -> None:
    """budget.rule=steps: every method has a recipe within factor x the reference's largest recipe's steps."""
    reference = [c for c in group if c.method == study.budget.reference]
    limits = [steps_of(c.cfg, r) for c in reference for r in grid_recipes(c)]
    if not limits or None in limits:
        return  # the train rows are not capped: checked after the grid ran
    for cell in [c for c in group if c.method != study.budget.reference]:
        fewest = min(steps_of(cell.cfg, recipe) or 0.0 for recipe in grid_recipes(cell))
        if fewest > study.budget.factor * max(limits):
            raise UserError(
                f"study.budget: no recipe of {cell.label} fits {study.budget.factor:g} x the steps of "
                f"method={study.budget.reference} ({fewest:.0f} > {study.budget.factor * max(limits):.0f}); valid: "
                "fewer epochs in its grid, a larger study.budget.factor, or study.budget.rule=time or none"
            )

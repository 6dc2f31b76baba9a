"""The chosen recipes as a file a preset takes them from: ``recipes.yaml`` in the study's folder (and on the study
run), each cell's recipe, and, where they fit, the per-task tables ``optimizer.task_lr`` and ``trainer.task_epochs``
that a preset such as ``experiment=glue_compare`` reads, so its recipes are re-derived, not typed by hand."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from ptexp.study.choose import Scored
from ptexp.study.spec import Cell, recipe_label

TABLES = {"optimizer.lr": "optimizer.task_lr", "trainer.epochs": "trainer.task_epochs"}  # recipe key -> per-task table


def task_of(cell: Cell) -> str:
    """The name a per-task table uses for the cell's task: its ``data`` axis (a preset's name), else data.name."""
    return dict(cell.axes).get("data") or str(cell.cfg.data.name)


def task_tables(cells: list[Cell], chosen: list[Scored]) -> dict | None:
    """``{optimizer: {task_lr: {task: {method: lr}}}, trainer: {task_epochs: ...}}``, or None when the recipes do
    not fit those tables (a grid key other than lr and epochs, or two cells of one task and method, e.g. two
    models)."""
    tables: dict = {}
    seen = set()
    for cell, pick in zip(cells, chosen, strict=True):
        if (task_of(cell), cell.method) in seen or any(key not in TABLES for key, _ in pick.recipe):
            return None
        seen.add((task_of(cell), cell.method))
        for key, value in pick.recipe:
            group, table = TABLES[key].split(".")
            tables.setdefault(group, {}).setdefault(table, {}).setdefault(task_of(cell), {})[cell.method] = value
    return tables


def recipes_text(cells: list[Cell], chosen: list[Scored], *, command: str, parent: str) -> str:
    """The file's text: a header, each cell's recipe, then the per-task tables where they fit."""
    lines = [
        f"# The recipes python -m ptexp.study chose on the selection split (study run {parent}):",
        f"#   {command}",
    ]
    per_cell = {cell.label: dict(pick.recipe) for cell, pick in zip(cells, chosen, strict=True)}
    lines += ["# Each cell's recipe (its sweep axes joined by /):"]
    lines += [f"#   {label}: {recipe_label(tuple(r.items()))}" for label, r in per_cell.items()]
    tables = task_tables(cells, chosen)
    if tables is None:
        lines += ["# (no per-task tables: the recipes set other keys, or a task and method has several cells)"]
        return "\n".join(lines) + "\n" + OmegaConf.to_yaml({"cells": per_cell})
    lines += ["# As a preset's per-task tables (conf/experiment/*.yaml; README, Studies):"]
    return "\n".join(lines) + "\n" + OmegaConf.to_yaml(tables)


def write_recipes(path: Path, cells: list[Cell], chosen: list[Scored], *, command: str, parent: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(recipes_text(cells, chosen, command=command, parent=parent))
    return path

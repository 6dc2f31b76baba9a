"""The chosen recipes as a file a preset takes them from: ``recipes.yaml`` in the study's folder (and on the study
run), each cell's recipe, and, where they fit, the per-task tables ``optimizer.task_lr`` and ``trainer.task_epochs``
that a preset such as ``experiment=glue_compare`` reads, so its recipes are re-derived, not typed by hand.

A study narrowed on the command line (``data=glue_stsb``) has the same key and folder as the whole study: its
recipes are merged into the file's earlier ones, so the file always holds every cell chosen so far."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from ptexp.study.choose import Scored
from ptexp.study.spec import Cell, recipe_label

TABLES = {"optimizer.lr": "optimizer.task_lr", "trainer.epochs": "trainer.task_epochs"}  # recipe key -> per-task table


def task_of(cell: Cell) -> str:
    """The name a per-task table uses for the cell's task: its ``data`` axis (a preset's name), else data.name."""
    return dict(cell.axes).get("data") or str(cell.cfg.data.name)


def entries_of(cells: list[Cell], chosen: list[Scored]) -> dict[str, dict]:
    """``{cell label: {task, method, recipe}}``: what the file records of each cell."""
    return {cell.label: {"task": task_of(cell), "method": cell.method, "recipe": dict(pick.recipe)}
            for cell, pick in zip(cells, chosen, strict=True)}  # fmt: skip


def earlier_entries(path: Path) -> dict[str, dict]:
    """The entries of the file an earlier invocation of the study wrote; none when there is no such file."""
    if not path.is_file():
        return {}
    cells = OmegaConf.to_container(OmegaConf.load(path)).get("cells") or {}
    return {label: entry for label, entry in cells.items() if isinstance(entry, dict) and "recipe" in entry}


def task_tables(entries: dict[str, dict]) -> dict | None:
    """``{optimizer: {task_lr: {task: {method: lr}}}, trainer: {task_epochs: ...}}``, or None when the recipes do
    not fit those tables (a grid key other than lr and epochs, or two cells of one task and method, e.g. two
    models)."""
    tables: dict = {}
    seen = set()
    for entry in entries.values():
        task, method, recipe = entry["task"], entry["method"], entry["recipe"]
        if (task, method) in seen or any(key not in TABLES for key in recipe):
            return None
        seen.add((task, method))
        for key, value in recipe.items():
            group, table = TABLES[key].split(".")
            tables.setdefault(group, {}).setdefault(table, {}).setdefault(task, {})[method] = value
    return tables


def recipes_text(entries: dict[str, dict], *, command: str, parent: str) -> str:
    """The file's text: a header, each cell's recipe, the per-task tables where they fit, then the cells."""
    lines = [
        f"# The recipes python -m ptexp.study chose on the selection split (latest study run {parent}):",
        f"#   {command}",
        "# Each cell's recipe (its sweep axes joined by /):",
        *(f"#   {label}: {recipe_label(tuple(e['recipe'].items()))}" for label, e in entries.items()),
    ]
    tables = task_tables(entries)
    if tables is None:
        lines += ["# (no per-task tables: the recipes set other keys, or a task and method has several cells)"]
        tables = {}
    else:
        lines += ["# As a preset's per-task tables (conf/experiment/*.yaml; README, Studies):"]
    return "\n".join(lines) + "\n" + OmegaConf.to_yaml({**tables, "cells": entries})


def write_recipes(path: Path, cells: list[Cell], chosen: list[Scored], *, command: str, parent: str) -> Path:
    """Write (or merge into) the study's recipes file."""
    entries = {**earlier_entries(path), **entries_of(cells, chosen)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(recipes_text(entries, command=command, parent=parent))
    return path

"""A study's cells and jobs, composed the way ``python -m ptexp -m`` composes a sweep's jobs (no torch).

The cells are the sweep axes of the composed config (``hydra.sweeper.params``, e.g. an experiment preset's
``model``, ``data``, ``method``) with the command line's comma-separated values over them; ``seed`` is no axis
(``study.seeds`` gives the seeds). Each cell is composed once; a job is a cell, a recipe (a point of the grid) and
a seed, set on a copy of the cell's config, so that its MLflow params can be predicted without running it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from ptexp.config import CONF_DIR, VOLATILE
from ptexp.tracking import config_params

GROUPS = frozenset(d.name for d in CONF_DIR.iterdir() if d.is_dir())
JOB_TAG = "study_key"  # each job's run carries the study's key as this tag (a tracking.tags key: no dots)


def value_text(value: Any) -> str:
    """A value as a Hydra override writes it (``true``, ``null``, ``[a,b]``, ``0.0002``)."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return "[" + ",".join(value_text(v) for v in value) + "]"
    return str(value)


@dataclass(frozen=True, eq=False)
class Cell:
    """One (task, model, method, ...) combination of the sweep axes, with its composed config."""

    axes: tuple[tuple[str, str], ...]  # (key, value) per sweep axis, e.g. (("data", "sst2"), ("method", "full"))
    cfg: DictConfig  # composed with ``settings``, as each of its jobs is
    settings: tuple[str, ...] = ()  # the study's own overrides of its jobs (job_settings)

    @property
    def label(self) -> str:
        return "/".join(value for _, value in self.axes) or self.method

    @property
    def method(self) -> str:
        return str(self.cfg.method.name)

    @property
    def task(self) -> tuple[tuple[str, str], ...]:
        """The axes but the method: the cells that share a budget."""
        return tuple((key, value) for key, value in self.axes if key != "method")


Recipe = tuple[tuple[str, Any], ...]  # (config key, value) per grid key, in the grid's order


def recipe_label(recipe: Recipe) -> str:
    return " ".join(f"{key}={value_text(value)}" for key, value in recipe)


@dataclass(frozen=True)
class Job:
    cell: Cell
    recipe: Recipe
    seed: int

    def assignment(self) -> dict[str, str]:
        """What this job sets over the study's base overrides: the cell's axes, the recipe and the seed."""
        return {**dict(self.cell.axes), **{k: value_text(v) for k, v in self.recipe}, "seed": str(self.seed)}

    def identity(self) -> dict[str, str]:
        """The MLflow params (and their values) by which this job's finished run is found among the study's."""
        cfg = self.cell.cfg.copy()
        for key, value in self.recipe:
            OmegaConf.update(cfg, key, value, merge=False)
        params = config_params(cfg)
        keys = [f"{k}.name" if k in GROUPS else k for k, _ in self.cell.axes] + [k for k, _ in self.recipe]
        return {**{k: params.get(k, "None") for k in keys}, "seed": str(self.seed)}


def split_arguments(argv: list[str]) -> tuple[list[str], dict[str, list[str]], dict[str, Any]]:
    """(plain overrides, sweep axes given as comma-separated values, the grids given whole). A grid
    (``study.grid={optimizer.lr:[1e-4,2e-4]}``, ``study.method_grid.prefix={...}``) replaces the composed one:
    Hydra would merge it into it, and refuses its dotted keys as new keys of a typed dict."""
    parser, plain, axes, grids = OverridesParser.create(), [], {}, {}
    for arg in argv:
        override = parser.parse_override(arg)
        if override.is_sweep_override():
            axes[override.key_or_group] = list(override.sweep_string_iterator())
        elif override.key_or_group.startswith(("study.grid", "study.method_grid")) and not arg.startswith(("+", "~")):
            grids[override.key_or_group] = override.value()
        else:
            plain.append(arg)
    return plain, axes, grids


def set_grids(cfg: DictConfig, grids: dict[str, Any]) -> None:
    with open_dict(cfg):
        for key, value in grids.items():
            OmegaConf.update(cfg, key, value, merge=False)


def compose_config(overrides: list[str], hydra: bool = False) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=hydra)


def sweep_axes(cfg: DictConfig, given: dict[str, list[str]]) -> dict[str, list[str]]:
    """The composed config's sweep axes (``hydra.sweeper.params``) but ``seed``, with ``given`` over them."""
    parser, axes = OverridesParser.create(), {}
    for key, values in (OmegaConf.select(cfg, "hydra.sweeper.params") or {}).items():
        override = parser.parse_override(f"{key}={values}")
        axes[key] = list(override.sweep_string_iterator()) if override.is_sweep_override() else [str(values)]
    axes.update(given)
    axes.pop("seed", None)
    return axes


def narrow_axes(plain: list[str], cfg: DictConfig) -> tuple[list[str], dict[str, list[str]]]:
    """(the overrides but those that name one value of a sweep axis of the composed preset, those as one-value
    axes): ``data=glue_stsb`` on ``experiment=scale_study_tuned`` runs that part of the same study (the same base
    config and key), as ``data=sst2,glue_stsb`` would run all of it."""
    parser, preset = OverridesParser.create(), set(OmegaConf.select(cfg, "hydra.sweeper.params") or {}) - {"seed"}
    rest, axes = [], {}
    for arg in plain:
        override = parser.parse_override(arg)
        if override.key_or_group in preset and not arg.startswith(("+", "~")):
            axes[override.key_or_group] = [str(override.value())]
        else:
            rest.append(arg)
    return rest, axes


def compose_cells(base: list[str], axes: dict[str, list[str]], grids: dict[str, Any]) -> list[Cell]:
    """One config per combination of the axes' values, composed with the jobs' own settings (job_settings)."""
    cells = []
    for values in itertools.product(*axes.values()):
        assigned = tuple(zip(axes, values, strict=True))
        given = [*base, *(f"{k}={v}" for k, v in assigned)]
        cfg = compose_config(given)
        set_grids(cfg, grids)
        settings = job_settings(cfg)  # they depend on the composed method, grid and tables: then compose with them
        cfg = compose_config([*given, *settings])
        set_grids(cfg, grids)
        cells.append(Cell(assigned, cfg, tuple(settings)))
    return cells


def grid_keys(study: DictConfig, method: str) -> dict[str, list[Any]]:
    """The grid of ``method``: ``study.grid`` with ``study.method_grid.<method>`` over it."""
    grid = OmegaConf.to_container(study.grid, resolve=True)
    grid.update(OmegaConf.to_container(study.method_grid, resolve=True).get(method, {}))
    return grid


def recipe_tables(grid: dict[str, list[Any]]) -> list[str]:
    """The per-method / per-task recipe tables that would replace a grid key's value in a job (cleared)."""
    tables = ["optimizer.task_lr"] if "optimizer.lr" in grid else []
    return tables + (["trainer.method_epochs", "trainer.task_epochs"] if "trainer.epochs" in grid else [])


def job_settings(cfg: DictConfig) -> list[str]:
    """The study's own overrides of each job of the cell composed as ``cfg``: best epoch on the selection split, the
    dev split scored at each epoch only with ``study.eval_history``, and every entry of a recipe table that would
    replace a grid key's value deleted (``key={}`` on the command line would merge, not clear)."""
    history = f"trainer.eval_history={value_text(bool(cfg.study.eval_history))}"
    tables = recipe_tables(grid_keys(cfg.study, str(cfg.method.name)))
    cleared = [f"~{table}.{entry}" for table in tables for entry in OmegaConf.select(cfg, table) or {}]
    return ["trainer.select_best=true", history, *cleared]


def job_overrides(job: Job, study_key: str) -> list[str]:
    """The cell's job settings and the study's tag."""
    return [*job.cell.settings, f"+tracking.tags.{JOB_TAG}={study_key}"]


def grid_recipes(cell: Cell) -> list[Recipe]:
    grid = grid_keys(cell.cfg.study, cell.method)
    return [tuple(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]


def study_key(cfg: DictConfig) -> str:
    """The study's key: a hash of the base config's params (study settings, seeds and tracking left out), so that
    a re-run of the same study (more seeds, a wider grid) finds its runs, and a changed one does not."""
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.pop("hydra", None)  # its sweep folders resolve only inside a job
    params = {k: v for k, v in config_params(cfg).items() if not k.startswith(VOLATILE)}
    return "s" + hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]

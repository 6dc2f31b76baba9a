"""A study's stages under its MLflow parent run: the grid (and ``budget.fill``) on the selection split, the choice
of each cell's recipe within its task's budget, then the seeds of each chosen recipe. Every stage first looks up
the study's finished runs and runs only the jobs without one."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ptexp.errors import UserError
from ptexp.signals import StopSignals
from ptexp.study.checks import by_task
from ptexp.study.choose import Scored, budget_limit, choose, fill_recipes, scored
from ptexp.study.launch import run_jobs
from ptexp.study.recipes import write_recipes
from ptexp.study.runs import StudyStore, json_tag, run_of
from ptexp.study.spec import Cell, Job, grid_recipes, recipe_label


@dataclass
class Study:
    cfg: DictConfig  # the base config (the study section and the first cell's defaults)
    cells: list[Cell]
    base: list[str]  # the overrides every job gets: the command line's, launcher settings included
    key: str  # the study's key (tag ptexp.study of its runs)
    command: str


def run_study(study: Study) -> list[Scored]:
    """The whole study; returns each cell's chosen recipe. Interrupted (SIGINT/SIGTERM), its runs are closed
    KILLED and Interrupted is raised on; failed, they are closed FAILED."""
    store = StudyStore(study.cfg, study.key)
    settings = OmegaConf.to_container(study.cfg.study, resolve=True, enum_to_str=True)
    parent = store.open(study.cfg.study.name or f"study {study.key}",
                        {"ptexp.overrides": study.command, "study.settings": json_tag(settings)})  # fmt: skip
    print(f"[ptexp.study] study parent run {parent} (key {study.key}), {len(study.cells)} cells", flush=True)
    status = "FAILED"
    try:
        with StopSignals():
            chosen = tune(study, store, parent)
            path = Path(study.cfg.output_root) / "studies" / study.key / "recipes.yaml"
            write_recipes(path, study.cells, chosen, command=study.command, parent=parent)
            store.client.log_artifact(parent, str(path))
            print(f"[ptexp.study] the chosen recipes, as a preset's per-task tables: {path}", flush=True)
            seeds = [Job(cell, pick.recipe, seed) for cell, pick in zip(study.cells, chosen, strict=True)
                     for seed in study.cfg.study.seeds]  # fmt: skip
            runs = stage(study, store, parent, "seeds", seeds)
            record_seeds(study, store, parent, seeds, runs)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        store.close(parent, status)
    return chosen


def stage(study: Study, store: StudyStore, parent: str, name: str, jobs: list[Job]) -> list:
    """Run the jobs that have no finished run yet under the stage's parent run; returns every job's run."""
    done = store.finished()
    todo = [job for job in jobs if run_of(job, done) is None]
    print(f"[ptexp.study] {name}: {len(jobs)} runs, {len(jobs) - len(todo)} finished earlier", flush=True)
    stage_run, status = store.open(name, {}, parent), "FAILED"
    try:
        run_jobs(todo, base=study.base, key=study.key, stage_run=stage_run, root=Path(study.cfg.output_root),
                 stage=name, busy=store.running)  # fmt: skip
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        store.close(stage_run, status)
    done = store.finished()
    runs = [run_of(job, done) for job in jobs]
    missing = [job.assignment() for job, run in zip(jobs, runs, strict=True) if run is None]
    if missing:
        raise RuntimeError(f"no finished run found in MLflow for {missing[0]} (and {len(missing) - 1} more)")
    return runs


def tune(study: Study, store: StudyStore, parent: str) -> list[Scored]:
    """The grid (seed: the first of study.seeds) of every cell, budget.fill's longer grid, each cell's choice."""
    seed, budget = study.cfg.study.seeds[0], study.cfg.study.budget
    cells = study.cells
    jobs = [Job(cell, recipe, seed) for cell in cells for recipe in grid_recipes(cell)]
    results: list[list[Scored]] = [[] for _ in cells]
    for job, run in zip(jobs, stage(study, store, parent, "grid", jobs), strict=True):
        results[cells.index(job.cell)].append(scored(run, job.recipe))
    chosen, limits = choose_all(cells, results, budget)
    if budget.fill and budget.rule == "time":
        extra = [Job(cell, recipe, seed) for cell, grid, limit in zip(cells, results, limits, strict=True) if limit
                 for recipe in fill_recipes(grid, limit[1])]  # fmt: skip
        for job, run in zip(extra, stage(study, store, parent, "fill", extra) if extra else [], strict=True):
            results[cells.index(job.cell)].append(scored(run, job.recipe))
        chosen, limits = choose_all(cells, results, budget)
    tags = {}
    for cell, grid, pick, limit in zip(cells, results, chosen, limits, strict=True):
        tags[f"study.{cell.label}.grid"] = json_tag([s.summary() for s in grid])
        tags[f"study.{cell.label}.budget"] = f"{limit[0]} <= {limit[1]:.1f}" if limit else "none"
        tags[f"study.{cell.label}.chosen"] = recipe_label(pick.recipe) if pick else "none within the budget"
        if pick:
            tags[f"study.{cell.label}.chosen_run"] = pick.run_id
            print(f"[ptexp.study] {cell.label}: chose {recipe_label(pick.recipe)} "
                  f"(selection {pick.selection:.4f}, {pick.train_s:.0f} s)", flush=True)  # fmt: skip
    store.set_tags(parent, tags)
    for cell, pick, limit in zip(cells, chosen, limits, strict=True):
        if pick is None:
            raise UserError(f"study.budget: no recipe of {cell.label} fits {limit[0]} <= {limit[1]:.1f} "
                            f"({budget.factor:g} x method={budget.reference}'s chosen recipe); valid: a larger "
                            "study.budget.factor, shorter recipes in the grid, or study.budget.rule=none")  # fmt: skip
    return chosen


def choose_all(
    cells: list[Cell], results: list[list[Scored]], budget: DictConfig
) -> tuple[list[Scored | None], list[tuple[str, float] | None]]:
    """Each cell's choice and budget: the reference method's best, then the others' best within its budget."""
    chosen: list[Scored | None] = [None] * len(cells)
    limits: list[tuple[str, float] | None] = [None] * len(cells)
    for group in by_task(cells).values():
        reference = next((c for c in group if c.method == budget.reference), None)
        ref_pick = choose(results[cells.index(reference)], None) if reference else None
        for cell in group:
            i = cells.index(cell)
            limits[i] = None if cell is reference else budget_limit(budget, ref_pick)
            chosen[i] = ref_pick if cell is reference else choose(results[i], limits[i])
    return chosen, limits


def record_seeds(study: Study, store: StudyStore, parent: str, jobs: list[Job], runs: list) -> None:
    """Each cell's eval scores of its seeds, as tags on the study parent and printed."""
    tags = {}
    for cell in study.cells:
        mine = [run for job, run in zip(jobs, runs, strict=True) if job.cell is cell]
        primary = mine[0].data.tags.get("ptexp.primary_metric", "accuracy")
        scores = {r.data.params["seed"]: r.data.metrics[f"eval/{primary}"] for r in mine}
        tags[f"study.{cell.label}.seeds"] = json_tag({"metric": f"eval/{primary}", "scores": scores})
        spread = statistics.stdev(scores.values()) if len(scores) > 1 else 0.0
        print(f"[ptexp.study] {cell.label}: eval {primary} {statistics.mean(scores.values()):.4f} ± {spread:.4f} "
              f"over {len(scores)} seeds", flush=True)  # fmt: skip
    store.set_tags(parent, tags)

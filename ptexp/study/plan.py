"""``python -m ptexp.study ... --plan``: the study's jobs per stage and an estimate of their train time, without
running anything (the MLflow store is read, if it exists, for the runs already finished; nothing is written).

The estimate: train rows x epochs x seconds per row and epoch of the model's full fine-tuning on 2 CPU cores, x
the method's cost relative to full's, x PAIR_COST for sentence-pair tasks; the evaluations at each epoch's end
(the selection rows, and the dev rows where ``study.eval_history`` scores them at each epoch, else once; at
EVAL_COST of a train row), and START_S per run. Models without a measured rate, and
tasks whose train rows are not capped (``data.max_train_samples``), get no estimate. Where the study has finished
runs of a job's cell already (a re-run), their median wall seconds per optimizer step on this machine, start-up and
evaluations included, times the job's steps replace that estimate.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ptexp.store import local_path, tracking_uri
from ptexp.study.checks import steps_of
from ptexp.study.run import Study
from ptexp.study.runs import StudyStore, matching, run_of
from ptexp.study.spec import Cell, Job, grid_recipes

# Full fine-tuning's train seconds per row and epoch on 2 CPU cores, single sentences: README, "Scale study" (300
# SST-2 rows, 3 epochs: MiniLM-L6 13 s, MPNet-base 75 s); tiny: this command's own test runs.
SECONDS_PER_ROW = {"minilm": 13 / 900, "mpnet_base": 75 / 900, "tiny": 0.002}
# train time per epoch relative to full fine-tuning's (README, accuracy benchmark on SST-2)
METHOD_COST = {"full": 1.0, "prefix": 0.56, "lora": 0.60, "ia3": 0.58, "bitfit": 0.60, "prompt": 1.20}
METHOD_COST["linear_probe"] = 0.038
PAIR_COST = 3.2  # README, "Scale study": RTE's pairs took 3.0x (MPNet-base) to 3.4x (MiniLM-L6) SST-2's time per row
DEV_ROWS = {"sst2": 872, "rte": 277, "mrpc": 408, "stsb": 1500, "cola": 1043}  # the GLUE dev splits (data.name)
EVAL_COST = 1 / 3  # an evaluated row against a trained one (no backward pass)
START_S = 20.0  # start-up per run: imports, data, model


def job_seconds(job: Job) -> float | None:
    """Estimated wall seconds of one job, or None (no rate for the model, or uncapped train rows)."""
    cfg: DictConfig = job.cell.cfg
    rate = SECONDS_PER_ROW.get(str(cfg.model.name))
    steps = steps_of(cfg, job.recipe)
    if rate is None or steps is None:
        return None
    pair = PAIR_COST if cfg.data.text_pair_column else 1.0
    rows = steps * OmegaConf.select(cfg, "trainer.batch_size")
    epochs = rows / cfg.data.max_train_samples if cfg.data.max_train_samples else 1.0
    dev = cfg.data.max_eval_samples or DEV_ROWS.get(str(cfg.data.name), 0)
    evaluated = (cfg.data.selection_rows or 0) * epochs + dev * (epochs if cfg.trainer.eval_history else 1)
    return START_S + rate * pair * (rows * METHOD_COST.get(job.cell.method, 1.0) + EVAL_COST * evaluated)


def cell_runs(cell: Cell, done: list) -> list:
    """The finished runs of ``cell``, any recipe and seed."""
    return matching(done, {k: v for k, v in Job(cell, (), 0).identity().items() if k != "seed"})


def seconds_per_step(runs: list) -> float | None:
    """The median wall seconds per optimizer step of ``runs`` (start-up and evaluations included); None without
    a finished run that logged its steps."""
    per_step = [(r.info.end_time - r.info.start_time) / 1000 / r.data.metrics["train/steps"] for r in runs
                if r.info.end_time and r.data.metrics.get("train/steps")]  # fmt: skip
    return statistics.median(per_step) if per_step else None


@dataclass
class CellPlan:
    """A cell's jobs still to run and their estimated seconds (None: no estimate)."""

    grid: list[float | None]  # a grid recipe not finished yet (first seed)
    seeds: list[float | None]  # a further seed without a finished run (at the mean grid recipe's estimate)
    measured: bool  # estimated from the cell's own finished runs


def plan_cell(cell: Cell, seeds: list[int], done: list) -> CellPlan:
    runs = cell_runs(cell, done)
    jobs = [Job(cell, recipe, seeds[0]) for recipe in grid_recipes(cell)]
    measured = seconds_per_step(runs)
    steps = {job: steps_of(cell.cfg, job.recipe) for job in jobs}
    each = {job: measured * steps[job] if measured and steps[job] else job_seconds(job) for job in jobs}
    mean = None if None in each.values() else statistics.fmean(each.values())
    finished_seeds = {r.data.params.get("seed") for r in runs}
    return CellPlan(
        grid=[each[job] for job in jobs if run_of(job, runs) is None],
        seeds=[mean for seed in seeds[1:] if str(seed) not in finished_seeds],
        measured=measured is not None,
    )


def finished_runs(study: Study) -> list:
    """The study's finished runs, when its store exists already (a local store is not created for a plan)."""
    path = local_path(tracking_uri(study.cfg))
    if path is not None and not Path(path).exists():
        return []
    return StudyStore(study.cfg, study.key).finished()


def print_plan(study: Study) -> None:
    seeds, budget = list(study.cfg.study.seeds), study.cfg.study.budget
    done = finished_runs(study)
    cells = {cell: plan_cell(cell, seeds, done) for cell in study.cells}
    recipes = {cell: len(grid_recipes(cell)) for cell in study.cells}
    grid_runs, todo_grid = sum(recipes.values()), sum(len(p.grid) for p in cells.values())
    todo_seeds = sum(len(p.seeds) for p in cells.values())
    fill = budget.fill and budget.rule == "time"
    print(f"study {study.key}: {len(study.cells)} cells x grid, then {len(seeds)} seeds of each chosen recipe")
    for cell in study.cells:
        print(f"  {cell.label}: {recipes[cell]} grid recipes")
    print(f"grid: {grid_runs} runs ({grid_runs - todo_grid} finished earlier)")
    if fill:
        print(f"fill: up to {sum(n for c, n in recipes.items() if c.method != budget.reference)} runs more (the grid "
              "at the most epochs within the budget; known after the grid)")  # fmt: skip
    beyond = len(study.cells) * (len(seeds) - 1)
    print(f"seeds: {len(study.cells) * len(seeds)} runs, {beyond} beyond the grid's ({beyond - todo_seeds} finished "
          "earlier)")  # fmt: skip
    print(f"jobs to run: {todo_grid + todo_seeds}" + (" (+ fill)" if fill else ""))
    estimates = [s for p in cells.values() for s in p.grid + p.seeds]
    mine = sum(len(p.grid) + len(p.seeds) for p in cells.values() if p.measured)
    if mine:
        print(f"{mine} of them estimated from the wall time per step of their cells' finished runs on this machine")
    known = [s for s in estimates if s is not None]
    if len(known) < len(estimates):
        print(f"estimated time: n/a for {len(estimates) - len(known)} runs (no rate for the model, or uncapped rows); "
              f"the others {duration(sum(known))}")  # fmt: skip
    else:
        print(f"estimated time: {duration(sum(known))} (one run at a time; start-up, training and evaluations)")


def duration(seconds: float) -> str:
    return f"~{seconds / 3600:.1f} h" if seconds >= 5400 else f"~{seconds / 60:.0f} min"

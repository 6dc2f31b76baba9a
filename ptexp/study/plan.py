"""``python -m ptexp.study ... --plan``: the study's jobs per stage and an estimate of their train time, without
running anything (the MLflow store is read, if it exists, for the runs already finished; nothing is written).

The estimate: train rows x epochs x seconds per row and epoch of the model's full fine-tuning on 2 CPU cores, x
the method's cost relative to full's, x PAIR_COST for sentence-pair tasks; the evaluations at each epoch's end
(the selection rows, and the dev rows where ``study.eval_history`` scores them at each epoch, else once; at
EVAL_COST of a train row), and START_S per run. Models without a measured rate, and
tasks whose train rows are not capped (``data.max_train_samples``), get no estimate.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ptexp.store import local_path, tracking_uri
from ptexp.study.checks import steps_of
from ptexp.study.run import Study
from ptexp.study.runs import StudyStore, run_of
from ptexp.study.spec import Job, grid_recipes

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


def finished_runs(study: Study) -> list:
    """The study's finished runs, when its store exists already (a local store is not created for a plan)."""
    path = local_path(tracking_uri(study.cfg))
    if path is not None and not Path(path).exists():
        return []
    return StudyStore(study.cfg, study.key).finished()


def print_plan(study: Study) -> None:
    seeds = list(study.cfg.study.seeds)
    grid = [Job(cell, recipe, seeds[0]) for cell in study.cells for recipe in grid_recipes(cell)]
    # the seeds stage: its recipes are chosen after the grid; estimated at each cell's mean grid recipe
    more = [Job(cell, recipe, seed) for cell in study.cells for recipe in grid_recipes(cell) for seed in seeds[1:]]
    per_cell = {id(cell): len(grid_recipes(cell)) for cell in study.cells}
    done = finished_runs(study)
    todo_grid = [job for job in grid if run_of(job, done) is None]
    estimates = [job_seconds(job) for job in todo_grid]
    estimates += [(job_seconds(job) or 0.0) / per_cell[id(job.cell)] if job_seconds(job) else None for job in more]
    fill = study.cfg.study.budget.fill and study.cfg.study.budget.rule == "time"
    print(f"study {study.key}: {len(study.cells)} cells x grid, then {len(seeds)} seeds of each chosen recipe")
    for cell in study.cells:
        print(f"  {cell.label}: {per_cell[id(cell)]} grid recipes")
    print(f"grid: {len(grid)} runs ({len(grid) - len(todo_grid)} finished earlier)")
    if fill:
        print(f"fill: up to {sum(per_cell[id(c)] for c in study.cells if c.method != study.cfg.study.budget.reference)}"
              " runs more (the grid at the most epochs within the budget; known after the grid)")  # fmt: skip
    print(f"seeds: {len(study.cells) * len(seeds)} runs, {len(study.cells) * (len(seeds) - 1)} beyond the grid's")
    print(f"jobs to run: {len(todo_grid) + len(study.cells) * (len(seeds) - 1)}" + (" (+ fill)" if fill else ""))
    known = [s for s in estimates if s is not None]
    if len(known) < len(estimates):
        print(f"estimated time: n/a for {len(estimates) - len(known)} runs (no rate for the model, or uncapped rows); "
              f"the others {duration(sum(known))}")  # fmt: skip
    else:
        print(f"estimated time: {duration(sum(known))} (train time and start-up, one run at a time on 2 CPU cores)")


def duration(seconds: float) -> str:
    return f"~{seconds / 3600:.1f} h" if seconds >= 5400 else f"~{seconds / 60:.0f} min"

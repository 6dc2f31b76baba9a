"""The runs a report covers for ``--study``: a ``python -m ptexp.study`` run's outcome, each cell's chosen recipe
with all its seeds (the grid's other recipes left out), each run carrying its cell's choice, budget and grid."""

from __future__ import annotations

import json
import time
from typing import Any

from ptexp.config import VOLATILE
from ptexp.report.runs import ReportError, Selection, run_data, search_all
from ptexp.report.stats import RunData, variant_order
from ptexp.study.runs import PARENT
from ptexp.study.spec import JOB_TAG

NEWEST = "newest"  # --study without a run id
CELL_FIELDS = ("chosen", "budget", "grid", "chosen_run", "seeds")  # the study run's tags: study.<cell>.<field>


def study_parents(client, experiment_id: str) -> list:
    """The experiment's study runs, newest first (at most 100)."""
    return client.search_runs([experiment_id], filter_string=f"tags.`ptexp.study` = '{PARENT}'", max_results=100,
                              order_by=["start_time DESC"])  # fmt: skip


def study_parent(client, experiment_id: str, wanted: str) -> Any:
    """The study run ``--study`` names (NEWEST: the newest); ReportError for a run that is no study of the
    experiment (status 2), or an experiment without a study (status 1)."""
    parents = study_parents(client, experiment_id)
    if not parents:
        raise ReportError("no study in this experiment yet (python -m ptexp.study ...)", status=1)
    if wanted == NEWEST:
        return parents[0]
    found = next((p for p in parents if p.info.run_id == wanted), None)
    if found is None:
        newest = ", ".join(p.info.run_id for p in parents[:3])
        raise ReportError(f"--study: {wanted!r} is not a study run of this experiment; valid: {newest} (the newest)")
    return found


def cells_of(tags: dict[str, str]) -> dict[str, dict[str, str]]:
    """cell label -> {field: value} from the study run's ``study.<cell>.<field>`` tags (a label may hold dots)."""
    cells: dict[str, dict[str, str]] = {}
    for key, value in tags.items():
        head, _, field = key.rpartition(".")
        if key.startswith("study.") and field in CELL_FIELDS:
            cells.setdefault(head.removeprefix("study."), {})[field] = value
    return cells


def recipe_identity(params: dict[str, str]) -> dict[str, str]:
    """What makes two runs the same recipe: every param but the seed and the volatile ones (tracking, output)."""
    return {k: v for k, v in params.items() if not k.startswith(VOLATILE)}


def grid_text(grid_json: str) -> str:
    """``optimizer.lr=0.0002 trainer.epochs=3: 0.8840 (52 s), ...`` from a cell's ``grid`` tag."""
    points = json.loads(grid_json)
    return ", ".join(f"{p['recipe']}: {p['selection']:.4f} ({p['train_s']:.0f} s)" for p in points)


def cell_runs(runs: list, chosen_id: str, fields: dict[str, str]) -> list[RunData]:
    """The chosen run and every other seed of its recipe (the newest run per seed), tagged with the cell's study."""
    by_id = {r.info.run_id: r for r in runs}
    if chosen_id not in by_id:
        return []
    identity = recipe_identity(by_id[chosen_id].data.params)
    newest: dict[str, Any] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time):
        if recipe_identity(run.data.params) == identity:
            newest[run.data.params.get("seed", "?")] = run
    study = {"recipe": fields.get("chosen", "?"), "budget": fields.get("budget", "?")}
    if "grid" in fields:
        study["grid"] = grid_text(fields["grid"])
    found = []
    for run in newest.values():
        row = run_data(run)
        row.study = study
        found.append(row)
    return found


def select_study(client, experiment_id: str, wanted: str) -> Selection:
    """The study's outcome: per cell, its chosen recipe's FINISHED runs over every seed run so far."""
    parent = study_parent(client, experiment_id, wanted)
    key, cells = parent.data.tags.get("ptexp.study_key", ""), cells_of(parent.data.tags)
    runs = search_all(client, experiment_id, f"tags.`{JOB_TAG}` = '{key}' and attributes.status = 'FINISHED'")
    jobs = [row for fields in cells.values() if "chosen_run" in fields
            for row in cell_runs(runs, fields["chosen_run"], fields)]  # fmt: skip
    jobs.sort(key=lambda r: (r.method, r.model, r.data, variant_order(r.variant), r.seed, r.name))
    waiting = sorted(label for label, fields in cells.items() if "chosen_run" not in fields)
    note = f"cells without a chosen recipe yet (the grid is not finished): {', '.join(waiting)}" if waiting else None
    when = time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(parent.info.start_time / 1000))
    description = f"study {parent.info.run_name!r} ({parent.info.run_id}): each cell's chosen recipe, every seed"
    return Selection(description, f"study_{when}_{parent.info.run_id[:8]}", parent, jobs, note)

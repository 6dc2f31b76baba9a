"""The runs a report covers: MLflow's runs of a sweep, a filter or the whole experiment, read as :class:`RunData`."""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ptexp.methods import METHODS
from ptexp.methods.base import variant_of
from ptexp.predictions import FOLDER, Predictions, read_predictions
from ptexp.report.stats import DEFAULT_PRIMARY, RunData, variant_order
from ptexp.store import local_path, short


class ReportError(Exception):
    """Ends the report with one message and an exit status (1: nothing to report, 2: usage or store error)."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


@dataclass
class Selection:
    description: str  # for people: "sweep 'sweep 18-02-49' (1eaf...)"
    slug: str  # for the default output folder
    parent: Any = None  # the sweep's parent Run, if the selection is a sweep
    runs: list[RunData] = field(default_factory=list)
    note: str | None = None  # why this selection, when it is not the obvious one


def connect(uri: str, experiment: str):
    """(client, experiment_id); ReportError(status 2) for a missing or unreachable store or an unknown experiment."""
    local = local_path(uri)
    if local is not None and not local.exists():
        raise ReportError(
            f"no MLflow store at {local} ({uri}); run an experiment first (python -m ptexp ...) "
            "or point --output-root / --tracking-uri at an existing store"
        )
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(experiment)
        names = [] if found else [e.name for e in client.search_experiments()]
    except Exception as err:
        raise ReportError(f"cannot read the MLflow store {uri!r}: {short(err, 300)}") from None
    if found is None:
        raise ReportError(
            f"experiment {experiment!r} not found in {uri}; valid: {', '.join(sorted(names)) or 'none there yet'}"
        )
    return client, found.experiment_id


def search_all(client, experiment_id: str, filter_string: str = "", order_by: list[str] | None = None) -> list:
    runs, token = [], None
    while True:
        try:
            page = client.search_runs(
                [experiment_id], filter_string=filter_string, max_results=1000, order_by=order_by, page_token=token
            )
        except Exception as err:
            raise ReportError(f"MLflow search failed for filter {filter_string!r}: {short(err, 300)}") from None
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def run_data(run) -> RunData:
    tags, params = run.data.tags, run.data.params
    prefix_length = optional_int(params.get("prefix_length"))
    method = tags.get("ptexp.method") or params.get("method.name") or "unknown"
    spec = METHODS.get(method)
    keys = spec.variant if spec is not None else (("prefix_length", "P"),)  # a method this ptexp does not have
    return RunData(
        run_id=run.info.run_id,
        name=run.info.run_name or run.info.run_id,
        status=run.info.status,
        method=method,
        model=tags.get("ptexp.model") or params.get("model.name") or "unknown",
        data=tags.get("ptexp.data") or params.get("data.name") or "unknown",
        prefix_length=prefix_length,
        seed=params.get("seed", "?"),
        metrics=dict(run.data.metrics),
        variant=variant_of(keys, params.get),
        error=tags.get("ptexp.error", ""),
        params=dict(params),
        primary=tags.get("ptexp.primary_metric") or DEFAULT_PRIMARY,
        select_best=params.get("trainer.select_best", "").lower() == "true",
        train_rows=optional_int(params.get("data.max_train_samples")),
    )


def optional_int(raw: str | None) -> int | None:
    """A logged int param; None where it is None, missing or not an int."""
    try:
        return None if raw in (None, "None", "", "null") else int(raw)
    except ValueError:
        return None


def load_predictions(client, run_id: str, folder: Path) -> Predictions | None:
    """The run's ``predictions/eval.jsonl`` artifact, downloaded into ``folder``; None where the run has none
    (logged before ptexp wrote one) or it cannot be read."""
    name = f"{FOLDER}/eval.jsonl"
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bar per run on stderr
    try:
        if name not in {a.path for a in client.list_artifacts(run_id, FOLDER)}:
            return None
        (folder / run_id).mkdir(parents=True, exist_ok=True)
        return read_predictions(Path(client.download_artifacts(run_id, name, str(folder / run_id))))
    except Exception:
        return None


def history(client, run_id: str, key: str) -> dict[int, float]:
    """step -> value; where a step was logged twice, the later value wins."""
    points = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return {m.step: m.value for m in points}


def sweep_parents(client, experiment_id: str) -> list:
    """The sweeps' parent runs of the experiment, newest first (at most 100)."""
    return client.search_runs(
        [experiment_id], filter_string="tags.ptexp.sweep = 'parent'", max_results=100, order_by=["start_time DESC"]
    )


def named_sweep(client, experiment_id: str, args: argparse.Namespace) -> Any:
    """The parent run that ``--sweep`` names; ReportError (status 2) for an id that is no sweep of the experiment."""
    newest = [p.info.run_id for p in sweep_parents(client, experiment_id)[:3]]
    valid = f"valid: a sweep's parent run id, e.g. {', '.join(newest)} (the newest)" if newest else "valid: none yet"
    try:
        parent = client.get_run(args.sweep)
    except Exception:
        raise ReportError(f"--sweep: no run {args.sweep!r} in the store; {valid}") from None
    if parent.info.experiment_id != experiment_id:
        raise ReportError(f"--sweep: run {args.sweep} belongs to another experiment than {args.experiment!r}; {valid}")
    if parent.data.tags.get("ptexp.sweep") != "parent":
        raise ReportError(f"--sweep: run {args.sweep} is not a sweep's parent run; {valid}")
    return parent


def newest_sweep(client, experiment_id: str, args: argparse.Namespace) -> tuple[Any, str | None]:
    """(the newest sweep's parent run, None); with no selection given, the newest sweep with a finished run instead
    of a newer one without, and a note that says so."""
    parents = sweep_parents(client, experiment_id)
    if not parents:
        raise ReportError(
            f"no sweep in experiment {args.experiment!r} yet (run python -m ptexp -m ...); "
            "use --all or --filter to report single runs",
            status=1,
        )
    if args.latest_sweep:
        return parents[0], None
    for parent in parents:
        done = f"tags.mlflow.parentRunId = '{parent.info.run_id}' and attributes.status = 'FINISHED'"
        if client.search_runs([experiment_id], filter_string=done, max_results=1):
            if parent is parents[0]:
                return parent, None
            newest = parents[0].info
            return parent, (
                f"the newest sweep, {newest.run_name!r} ({newest.run_id}), has no finished run: reporting the newest "
                "sweep that has (--latest-sweep for the newest)"
            )
    return parents[0], None


def select(client, experiment_id: str, args: argparse.Namespace) -> Selection:
    parent = note = None
    if args.sweep:
        parent = named_sweep(client, experiment_id, args)
    elif not (args.all or args.filter):  # --latest-sweep, also the default
        parent, note = newest_sweep(client, experiment_id, args)

    clauses, parts, slug_parts = [], [], []
    if parent is not None:
        clauses.append(f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
        when = time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(parent.info.start_time / 1000))
        parts.append(f"sweep {parent.info.run_name!r} ({parent.info.run_id})")
        slug_parts.append(f"sweep_{when}_{parent.info.run_id[:8]}")
    if args.filter:
        clauses.append(args.filter)
        parts.append(f"filter {args.filter!r}")
        slug_parts.append("filter_" + hashlib.sha1(args.filter.encode()).hexdigest()[:8])
    if not clauses:
        parts.append("every run")
        slug_parts.append("all_runs")
    runs = search_all(client, experiment_id, " and ".join(clauses))  # MLflow filters know AND only
    jobs = [run_data(r) for r in runs if r.data.tags.get("ptexp.sweep") != "parent"]
    jobs.sort(key=lambda r: (r.method, r.model, r.data, variant_order(r.variant), r.seed, r.name))
    return Selection(" + ".join(parts), "_".join(slug_parts), parent, jobs, note)

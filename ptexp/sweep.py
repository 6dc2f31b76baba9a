"""One MLflow parent run per Hydra multirun (the ``hydra.callbacks.mlflow_sweep`` of conf/config.yaml).

conf/config.yaml names the callback by its older path, ``ptexp.tracking.SweepParentCallback``, which re-exports it.
"""

from __future__ import annotations

import atexit
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ptexp.errors import UserError
from ptexp.store import connect, holds_only_hydra_files, remove_folder, short, tracking_uri

PARENT_RUN_ENV = "PTEXP_PARENT_RUN_ID"  # the parent run's id, for the jobs of the sweep
STAGE_RUN_ENV = "PTEXP_STAGE_RUN_ID"  # set by python -m ptexp.study: the stage's parent run, which the study closes
# conf/hydra/launcher/joblib.yaml has the name of the plugin's schema, so Hydra checks it against that (intended:
# same keys) and warns on every composition. Silenced here too because joblib workers import this module (the
# sweep callback travels with the job) before they compose their config.
SCHEMA_MATCHING_WARNING = r"(?s).*is validated against ConfigStore schema with the same name"
warnings.filterwarnings("ignore", message=SCHEMA_MATCHING_WARNING)


class SweepParentCallback(Callback):
    """Creates one parent run per Hydra multirun before any job starts (so parallel launchers never race
    to create the SQLite store), hands its id to the jobs, and closes it when the sweep ends."""

    def __init__(self) -> None:
        self.client = self.run_id = self.sweep_dir = None
        self.created = False  # whether this sweep created its parent run (not reopened an earlier one)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun: every process would start the sweep
            print("error: -m: a sweep cannot run under torchrun; valid: one torchrun command per run", file=sys.stderr)
            raise SystemExit(2)
        self.sweep_dir = Path(config.hydra.sweep.dir).resolve()
        atexit.register(self._at_exit)  # if the sweep dies before on_multirun_end (a job's error, a signal)
        if not config.tracking.enabled:
            return
        if os.environ.get(STAGE_RUN_ENV):  # a sweep of a study: its jobs go under the study's stage run
            os.environ[PARENT_RUN_ENV] = os.environ[STAGE_RUN_ENV]
            return
        try:
            self.client, experiment_id = connect(config)
        except UserError as err:
            raise SystemExit(f"error: {err}") from None
        overrides = list(config.hydra.overrides.task)
        sweep_dir = str(Path(config.hydra.sweep.dir).resolve())
        tags = {"ptexp.sweep": "parent", "ptexp.sweep_dir": sweep_dir, "ptexp.overrides": " ".join(overrides)}
        name = config.tracking.run_name or f"sweep {Path(sweep_dir).name}"
        if config.trainer.resume is True or str(config.trainer.resume).lower() == "true":
            self.run_id = self._reopen(experiment_id, sweep_dir)  # resuming a sweep: its jobs stay under one parent
        if self.run_id is None:
            self.run_id = self.client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
            self.created = True
        os.environ[PARENT_RUN_ENV] = self.run_id
        print(f"[ptexp] sweep parent run {self.run_id} in {tracking_uri(config)}", flush=True)

    def _reopen(self, experiment_id: str, sweep_dir: str) -> str | None:
        """The parent run of an earlier sweep into the same folder (``hydra.sweep.dir``), set RUNNING again."""
        earlier = self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.`ptexp.sweep` = 'parent' and tags.`ptexp.sweep_dir` = '{sweep_dir}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not earlier:
            return None
        self.client.update_run(earlier[0].info.run_id, status="RUNNING")
        return earlier[0].info.run_id

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.run_id is None:
            return
        try:
            children = self.client.search_runs(
                [self.client.get_run(self.run_id).info.experiment_id],
                filter_string=f"tags.mlflow.parentRunId = '{self.run_id}'",
            )
            failed = [r for r in children if r.info.status != "FINISHED"]
            self._close("FAILED" if failed else "FINISHED")
        except Exception as err:  # the store went away: the jobs' own folders hold their results
            print(f"[ptexp] warning: could not close the sweep's parent run ({short(err)})", file=sys.stderr)
            return
        print(
            f"[ptexp] sweep done: {len(children) - len(failed)} of {len(children)} runs finished "
            f"(parent run {self.run_id})",
            flush=True,
        )
        for run in sorted(children, key=lambda r: r.info.start_time):
            accuracy = run.data.metrics.get("eval/accuracy")
            shown = f"{accuracy:.4f}" if accuracy is not None else "n/a"
            print(f"[ptexp]   {run.info.run_name:<40} {run.info.status:<9} eval accuracy {shown}", flush=True)
        if config.hydra.sweeper.get("direction") is not None and children:  # a search (Optuna): what it optimised
            print(objective_line(children), flush=True)

    def _at_exit(self) -> None:
        """The sweep ended before on_multirun_end. When no job ran (a mistake every job shares, such as a bad data
        file, stops the sweep at its first job), the parent run this sweep created and the sweep's folder are
        removed, so that nothing is left behind; else the parent run is marked FAILED."""
        if self.run_id is not None and self.created and not self._has_children():
            self._discard()
        self._close("FAILED")
        if self.sweep_dir is not None and holds_nothing_but_hydra_files(self.sweep_dir):
            remove_folder(self.sweep_dir, parents=2)  # and the date folder and multiruns/, if they are left empty

    def _has_children(self) -> bool:
        """Whether a job created its run under the parent (True when the store cannot tell: the parent stays)."""
        try:
            experiment_id = self.client.get_run(self.run_id).info.experiment_id
            filter_string = f"tags.mlflow.parentRunId = '{self.run_id}'"
            return bool(self.client.search_runs([experiment_id], filter_string, max_results=1))
        except Exception:
            return True

    def _discard(self) -> None:
        """Delete the parent run; in a local store (SQLite, files) for good, as ``mlflow gc`` does."""
        try:
            self.client.delete_run(self.run_id)
            store = getattr(getattr(self.client, "_tracking_client", None), "store", None)
            if hasattr(store, "_hard_delete_run"):
                store._hard_delete_run(self.run_id)
        except Exception as err:
            print(f"[ptexp] warning: could not remove the sweep's parent run ({short(err)})", file=sys.stderr)
            return
        print(f"[ptexp] no job of the sweep ran: its parent run {self.run_id} is removed", flush=True)
        self.run_id = None

    def _close(self, status: str) -> None:
        try:
            if self.run_id is not None and self.client.get_run(self.run_id).info.status == "RUNNING":
                self.client.set_terminated(self.run_id, status)
        except Exception as err:
            print(f"[ptexp] warning: could not close the sweep's parent run ({short(err)})", file=sys.stderr)
        os.environ.pop(PARENT_RUN_ENV, None)


def objective_line(children: list) -> str:
    """Which split a search's best value (e.g. Optuna's "Best value") is from, read off its runs: the selection
    split's best when they carved one (``data/selection_rows``), else the eval split (then it is optimistic)."""
    primary = children[0].data.tags.get("ptexp.primary_metric", "accuracy")
    rows = {int(r.data.metrics["data/selection_rows"]) for r in children if "data/selection_rows" in r.data.metrics}
    if rows:
        sizes = "/".join(str(n) for n in sorted(rows))
        return (
            f"[ptexp] the search optimised selection/best_{primary}: the best value is on the selection split "
            f"({sizes} rows carved from train), not on the eval split"
        )
    return (
        f"[ptexp] the search optimised eval/{primary}: the best value is on the eval split it reports (no selection "
        "split), so it is optimistic; carve one with data.selection_fraction or data.selection_rows"
    )


def holds_nothing_but_hydra_files(sweep_dir: Path) -> bool:
    """Whether a sweep folder holds only Hydra's ``multirun.yaml`` and job folders with only Hydra's own files."""
    return sweep_dir.is_dir() and all(
        p.name == "multirun.yaml" or holds_only_hydra_files(p) for p in sweep_dir.iterdir()
    )

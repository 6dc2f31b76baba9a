"""MLflow tracking: one run per job, one parent run per sweep, and a local copy of every metric.

The default store is a SQLite file under ``output_root`` (absolute path, so Hydra's working directory
does not matter), with artifacts beside it. Every metric is also appended to ``metrics.jsonl`` in the
job's output folder, so nothing is lost if the tracking store goes away mid-run.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ptexp.config import UserError

PARENT_RUN_ENV = "PTEXP_PARENT_RUN_ID"
# Fail fast on an unreachable server instead of MLflow's default minutes of retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial MLflow database tables"


def tracking_uri(cfg: DictConfig) -> str:
    if cfg.tracking.uri:
        return str(cfg.tracking.uri)
    return f"sqlite:///{Path(cfg.output_root).resolve() / 'mlflow.db'}"


def artifact_root(cfg: DictConfig) -> str:
    root = cfg.tracking.artifact_root or Path(cfg.output_root) / "mlartifacts"
    return Path(root).resolve().as_uri()


def connect(cfg: DictConfig):
    """(client, experiment_id), creating the store and the experiment if needed; UserError if unreachable."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    try:
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(cfg.tracking.experiment)
        if experiment is not None:
            return client, experiment.experiment_id
        try:
            return client, client.create_experiment(cfg.tracking.experiment, artifact_location=artifact_root(cfg))
        except MlflowException:  # created meanwhile by a parallel job
            return client, client.get_experiment_by_name(cfg.tracking.experiment).experiment_id
    except Exception as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"tracking.uri: cannot use the MLflow store {uri!r}: {first_line[:300]}. Valid: a reachable "
            "tracking server (http://host:port), a sqlite:///ABSOLUTE/PATH.db, or tracking.enabled=false"
        ) from None


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """{'a.b': 'value'} from a nested dict/list, for MLflow params."""
    if isinstance(tree, dict):
        out: dict[str, str] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: str(tree)}


class RunTracker:
    """One job's MLflow run (or none, with tracking.enabled=false) plus ``metrics.jsonl`` in ``run_dir``."""

    def __init__(self, cfg: DictConfig, run_dir: Path):
        self.run_dir = run_dir
        self.metrics_file = run_dir / "metrics.jsonl"
        self.client = self.run_id = None
        if cfg.tracking.enabled:
            self.client, self.experiment_id = connect(cfg)

    def start(self, run_name: str, params: dict[str, str], tags: dict[str, str]) -> None:
        if self.client is None:
            return
        from mlflow.entities import Param, RunTag

        parent = os.environ.get(PARENT_RUN_ENV)
        if parent:
            tags = {**tags, "mlflow.parentRunId": parent}
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        self.run_id = run.info.run_id
        items = [Param(k, v[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])
        self.client.log_batch(self.run_id, tags=[RunTag("ptexp.run_dir", str(self.run_dir))])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        stamp = int(time.time() * 1000)
        with self.metrics_file.open("a") as f:
            f.write(json.dumps({"step": step, "timestamp": stamp, **metrics}) + "\n")
        if self.run_id is not None:
            from mlflow.entities import Metric

            batch = [Metric(k, float(v), stamp, step) for k, v in metrics.items()]
            self.client.log_batch(self.run_id, metrics=batch)

    def log_artifact(self, path: Path) -> None:
        if self.run_id is not None:
            self.client.log_artifact(self.run_id, str(path))

    def log_artifacts(self, folder: Path, artifact_path: str) -> None:
        if self.run_id is not None:
            self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    def set_tag(self, key: str, value: str) -> None:
        if self.run_id is not None:
            self.client.set_tag(self.run_id, key, value)

    def finish(self, status: str) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status)

    @property
    def url_hint(self) -> str:
        return f"run {self.run_id}" if self.run_id else "tracking disabled"


class SweepParentCallback(Callback):
    """Creates one parent run per Hydra multirun before any job starts (so parallel launchers never race
    to create the SQLite store), hands its id to the jobs, and closes it when the sweep ends."""

    def __init__(self) -> None:
        self.client = self.run_id = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.tracking.enabled:
            return
        try:
            self.client, experiment_id = connect(config)
        except UserError as err:
            raise SystemExit(f"error: {err}") from None
        overrides = list(config.hydra.overrides.task)
        sweep_dir = str(config.hydra.sweep.dir)
        tags = {"ptexp.sweep": "parent", "ptexp.sweep_dir": sweep_dir, "ptexp.overrides": " ".join(overrides)}
        name = config.tracking.run_name or f"sweep {Path(sweep_dir).name}"
        run = self.client.create_run(experiment_id, run_name=name, tags=tags)
        self.run_id = run.info.run_id
        os.environ[PARENT_RUN_ENV] = self.run_id
        atexit.register(self._close, "FAILED")  # if the sweep dies before on_multirun_end
        print(f"[ptexp] sweep parent run {self.run_id} in {tracking_uri(config)}", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.run_id is None:
            return
        children = self.client.search_runs(
            [self.client.get_run(self.run_id).info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self.run_id}'",
        )
        failed = [r for r in children if r.info.status != "FINISHED"]
        self._close("FAILED" if failed else "FINISHED")
        print(
            f"[ptexp] sweep done: {len(children) - len(failed)} of {len(children)} runs finished "
            f"(parent run {self.run_id})",
            flush=True,
        )
        for run in sorted(children, key=lambda r: r.info.start_time):
            accuracy = run.data.metrics.get("eval/accuracy")
            shown = f"{accuracy:.4f}" if accuracy is not None else "n/a"
            print(f"[ptexp]   {run.info.run_name:<40} {run.info.status:<9} eval accuracy {shown}", flush=True)

    def _close(self, status: str) -> None:
        if self.run_id is not None and self.client.get_run(self.run_id).info.status == "RUNNING":
            self.client.set_terminated(self.run_id, status)
        os.environ.pop(PARENT_RUN_ENV, None)


def config_params(cfg: DictConfig) -> dict[str, str]:
    """The flattened, resolved config (without Hydra's own node) as MLflow params."""
    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    container.pop("hydra", None)
    return flatten(container)

"""The MLflow store and a run folder's local copy of its tracking, shared by tracking, sync, checkpoint and report.

The default store is a SQLite file under ``output_root`` (absolute path, so Hydra's working directory does not
matter), with artifacts beside it. A run folder keeps ``metrics.jsonl`` (every metric point) and ``tracking.json``
(store, run id, params, tags, artifacts, final status); :func:`sync_run_dir` replays that copy into the store.
MLflow is imported inside the functions that need it, so that the CLI's early checks stay fast.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ptexp.errors import UserError

RECORD, METRICS = "tracking.json", "metrics.jsonl"
# An outage must not stall training for minutes: few, quick retries (MLflow's defaults: 7 retries, backoff 2,
# 120 s timeout). Set before MLflow's first request; the environment still wins.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial MLflow database tables"


def default_uri(output_root: str) -> str:
    """The store when ``tracking.uri`` is unset: ``sqlite:///<absolute output_root>/mlflow.db``."""
    return f"sqlite:///{Path(output_root).resolve() / 'mlflow.db'}"


def tracking_uri(cfg: DictConfig) -> str:
    return str(cfg.tracking.uri) if cfg.tracking.uri else default_uri(cfg.output_root)


def artifact_root(cfg: DictConfig) -> str | None:
    """Where a new experiment keeps its artifacts. None for a tracking server: the server's own artifact store
    (``mlflow-artifacts:/``, proxied), so every client's artifacts end up in one place."""
    if cfg.tracking.artifact_root:
        root = str(cfg.tracking.artifact_root)
        return root if "://" in root else Path(root).resolve().as_uri()
    if tracking_uri(cfg).startswith(("http://", "https://")):
        return None
    return (Path(cfg.output_root) / "mlartifacts").resolve().as_uri()


def local_path(uri: str) -> Path | None:
    """The file or folder a local store (``sqlite:///``, ``file:``, a plain path) lives in; None for a server."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :])
    if uri.startswith("file:"):
        return Path(uri[len("file://") :] if uri.startswith("file://") else uri[len("file:") :])
    return None if "://" in uri else Path(uri)


def short(err: BaseException, limit: int = 200) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:limit]


def probe_server(uri: str, timeout: float = 5.0) -> None:
    """One quick request to an HTTP tracking server, so that a wrong port fails in a second, not after retries."""
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return  # something answers (a proxy, an older server): MLflow's own calls will tell
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise UserError(
            f"tracking.uri: cannot reach the MLflow server {uri} ({reason}); "
            "valid: a running server (mlflow server --port N), a sqlite:///ABSOLUTE/PATH.db, or tracking.enabled=false"
        ) from None


def client_for(uri: str):
    from mlflow.tracking import MlflowClient

    if uri.startswith(("http://", "https://")):
        probe_server(uri)
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri)


def experiment_id_for(client, name: str, artifact_location: str | None) -> str:
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException:  # created meanwhile by a parallel job
        return client.get_experiment_by_name(name).experiment_id


def connect(cfg: DictConfig):
    """(client, experiment_id), creating the store and the experiment if needed; UserError if unreachable."""
    uri = tracking_uri(cfg)
    try:
        client = client_for(uri)
        return client, experiment_id_for(client, cfg.tracking.experiment, artifact_root(cfg))
    except UserError:
        raise
    except Exception as err:
        raise UserError(
            f"tracking.uri: cannot use the MLflow store {uri!r}: {short(err)}. Valid: a reachable "
            "tracking server (http://host:port), a sqlite:///ABSOLUTE/PATH.db, or tracking.enabled=false"
        ) from None


def run_dir_of(cfg: DictConfig, run_id: str) -> Path:
    """The run folder (tag ``ptexp.run_dir``) of MLflow run ``run_id`` in the configured store."""
    client, _ = connect(cfg)
    try:
        run = client.get_run(run_id)
    except Exception:
        raise UserError(
            f"trainer.resume: no MLflow run {run_id} in {tracking_uri(cfg)}; valid: a run id of this store "
            "(see the MLflow UI), a run folder, or true"
        ) from None
    folder = run.data.tags.get("ptexp.run_dir")
    if not folder:
        raise UserError(f"trainer.resume: MLflow run {run_id} has no ptexp.run_dir tag; valid: a run folder")
    return Path(folder)


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """{'a.b': 'value'} from a nested dict/list, for MLflow params."""
    if isinstance(tree, dict):
        out: dict[str, str] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: str(tree)}


def now_ms() -> int:
    return int(time.time() * 1000)


# ---------------------------------------------------------------------------------------------------------------
# A run folder's local copy


def holds_only_hydra_files(run_dir: Path) -> bool:
    """Whether ``run_dir`` is a folder with nothing in it but what Hydra writes (``.hydra/``, ``*.log``)."""
    return run_dir.is_dir() and all(p.name == ".hydra" or p.suffix == ".log" for p in run_dir.iterdir())


def remove_folder(folder: Path, parents: int) -> None:
    """Remove ``folder`` (a run or sweep folder that holds only Hydra's files), then up to ``parents`` folders above
    it that it leaves empty (its date folder, runs/ or multiruns/)."""
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):  # a folder above that still holds another run's
        for parent in list(folder.parents)[:parents]:
            parent.rmdir()


def read_record(run_dir: Path) -> dict | None:
    path = run_dir / RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def write_record(run_dir: Path, record: dict) -> None:
    tmp = run_dir / (RECORD + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, run_dir / RECORD)


def read_metrics(run_dir: Path) -> list[tuple[str, float, int, int]]:
    """(key, value, timestamp, step) of every point in ``metrics.jsonl`` (a torn last line is skipped)."""
    path, points = run_dir / METRICS, []
    if not path.is_file():
        return points
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a hard kill
        step, stamp = int(row.pop("step")), int(row.pop("timestamp"))
        points += [(key, float(value), stamp, step) for key, value in row.items()]
    return points


def sync_run_dir(run_dir: Path, client=None, final: bool = True, status: str | None = None) -> tuple[str, dict]:
    """Make the MLflow run match ``run_dir``'s local copy. Returns (run_id, counts of what was sent).

    Idempotent: a metric point is sent only if the run lacks its (key, step, timestamp), a param only if its key
    is missing. ``final``: also set the recorded final status (``status`` is used only when none was recorded);
    otherwise (a catch-up during the run) the run is set RUNNING.
    """
    record = read_record(run_dir)
    if record is None or "params" not in record:
        raise UserError(f"RUN_DIR: {run_dir} holds no {RECORD}; valid: a run folder written with tracking enabled")
    client = client or client_for(record["uri"])
    run, created = _the_run(run_dir, record, client)
    run_id = run.info.run_id
    sent = {"created": created, "params": _send_params_and_tags(client, run, record)}
    sent["metrics"] = _send_missing_metrics(client, run_id, read_metrics(run_dir))
    sent["artifacts"] = 0
    for path, artifact_path in record.get("artifacts", []):  # small files, or the adapter: sent again, same names
        if Path(path).is_dir():
            client.log_artifacts(run_id, path, artifact_path)
        elif Path(path).is_file():
            client.log_artifact(run_id, path, artifact_path)
        else:
            continue
        sent["artifacts"] += 1
    if final:
        if status and not record.get("status"):  # closing a run that never recorded its end (e.g. SIGKILL)
            record.update(status=status, end_time=record.get("end_time") or now_ms())
            write_record(run_dir, record)
        status = record.get("status")
        if status and run.info.status != status:
            client.set_terminated(run_id, status, record.get("end_time"))
    elif run.info.status != "RUNNING":
        client.update_run(run_id, status="RUNNING")
    return run_id, sent


def _the_run(run_dir: Path, record: dict, client) -> tuple[Any, int]:
    """(the recorded MLflow run, 0), or (a run created from the record, 1) when the store lacks it."""
    from mlflow.exceptions import MlflowException

    run = None
    if record.get("run_id"):
        try:
            run = client.get_run(record["run_id"])
        except MlflowException as err:
            if err.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            record["tags"]["ptexp.synced_from_run_id"] = record["run_id"]
    created = 0
    if run is None:
        experiment_id = experiment_id_for(client, record["experiment"], record.get("artifact_location"))
        run = client.create_run(
            experiment_id, start_time=record.get("start_time"), tags=record["tags"], run_name=record.get("run_name")
        )
        created = 1
    if record.get("run_id") != run.info.run_id:
        record["run_id"] = run.info.run_id
        write_record(run_dir, record)
    return run, created


def _send_params_and_tags(client, run, record: dict) -> int:
    """Send the params the run lacks and the tags it holds otherwise; returns the number of params sent."""
    from mlflow.entities import Param, RunTag

    params = [Param(k, v) for k, v in record["params"].items() if k not in run.data.params]
    tags = [RunTag(k, v) for k, v in record["tags"].items() if run.data.tags.get(k) != v]
    for i in range(0, len(params), 100):
        client.log_batch(run.info.run_id, params=params[i : i + 100])
    for i in range(0, len(tags), 100):
        client.log_batch(run.info.run_id, tags=tags[i : i + 100])
    return len(params)


def _send_missing_metrics(client, run_id: str, points: list[tuple[str, float, int, int]]) -> int:
    from mlflow.entities import Metric

    present = {
        (m.key, m.step, m.timestamp)
        for key in sorted({p[0] for p in points})
        for m in client.get_metric_history(run_id, key)
    }
    missing = [Metric(k, v, t, s) for k, v, t, s in points if (k, s, t) not in present]
    for i in range(0, len(missing), 1000):
        client.log_batch(run_id, metrics=missing[i : i + 1000])
    return len(missing)

"""MLflow tracking: one run per job, one parent run per sweep, and a local copy of everything logged.

The default store is a SQLite file under ``output_root`` (absolute path, so Hydra's working directory
does not matter), with artifacts beside it. Every metric is appended to ``metrics.jsonl`` in the job's
output folder before it is sent, and the run's params, tags, artifacts and final status are kept in
``tracking.json`` there. An unreachable store at start fails at once; one that goes away mid-run does not
stop training: the tracker goes offline (one warning line), retries now and then, and catches up when the
store answers again; ``python -m ptexp.sync RUN_DIR`` uploads whatever is still missing later.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ptexp.errors import UserError

PARENT_RUN_ENV = "PTEXP_PARENT_RUN_ID"
RECORD = "tracking.json"
# An outage must not stall training for minutes: few, quick retries (MLflow's defaults: 7 retries, backoff 2,
# 120 s timeout). Set before MLflow's first request; the environment still wins.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
RETRY_OFFLINE_S = (30, 600)  # first retry after going offline, doubling up to the second
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial MLflow database tables"
# conf/hydra/launcher/joblib.yaml has the name of the plugin's schema, so Hydra checks it against that (intended:
# same keys) and warns on every composition. Silenced here too because joblib workers import this module (the
# sweep callback travels with the job) before they compose their config.
SCHEMA_MATCHING_WARNING = r"(?s).*is validated against ConfigStore schema with the same name"
warnings.filterwarnings("ignore", message=SCHEMA_MATCHING_WARNING)


def tracking_uri(cfg: DictConfig) -> str:
    if cfg.tracking.uri:
        return str(cfg.tracking.uri)
    return f"sqlite:///{Path(cfg.output_root).resolve() / 'mlflow.db'}"


def artifact_root(cfg: DictConfig) -> str | None:
    """Where a new experiment keeps its artifacts. None for a tracking server: the server's own artifact store
    (``mlflow-artifacts:/``, proxied), so every client's artifacts end up in one place."""
    if cfg.tracking.artifact_root:
        root = str(cfg.tracking.artifact_root)
        return root if "://" in root else Path(root).resolve().as_uri()
    if tracking_uri(cfg).startswith(("http://", "https://")):
        return None
    return (Path(cfg.output_root) / "mlartifacts").resolve().as_uri()


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


def read_record(run_dir: Path) -> dict | None:
    path = run_dir / RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def write_record(run_dir: Path, record: dict) -> None:
    tmp = run_dir / (RECORD + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, run_dir / RECORD)


def now_ms() -> int:
    return int(time.time() * 1000)


class RunTracker:
    """One job's MLflow run (or none, with tracking.enabled=false) plus its local copy in ``run_dir``:
    ``metrics.jsonl`` (every metric point) and ``tracking.json`` (store, run id, params, tags, artifacts, status).

    Every store call goes through :meth:`_send`: a failure takes the tracker offline instead of stopping the
    run; after ``RETRY_OFFLINE_S`` it tries again by replaying the local copy (:func:`ptexp.sync.sync_run_dir`,
    which sends only what the store lacks), and at the end it tries once more before telling you to sync."""

    def __init__(self, cfg: DictConfig, run_dir: Path):
        self.run_dir = run_dir
        self.metrics_file = run_dir / "metrics.jsonl"
        self.client = self.run_id = None
        self.offline, self.retry_at, self.retry_wait = False, 0.0, RETRY_OFFLINE_S[0]
        self.record: dict[str, Any] = {}
        if cfg.tracking.enabled:
            self.client, self.experiment_id = connect(cfg)
            self.record = {
                "uri": tracking_uri(cfg),
                "experiment": cfg.tracking.experiment,
                "artifact_location": artifact_root(cfg),
            }

    def start(self, run_name: str, params: dict[str, str], tags: dict[str, str], resume: bool = False) -> None:
        """Create the run. Resuming (``run_dir`` holds the run's ``tracking.json``), reopen that run instead, by a
        catch-up: its params stay as they are (only missing keys are added, so no "changing param values" error),
        it is set RUNNING, and whatever it lacks is sent; a run the store lacks is created anew, linked by the tag
        ``ptexp.synced_from_run_id``."""
        if self.client is None:
            return
        previous = (read_record(self.run_dir) or {}) if resume else {}
        tags = {**previous.get("tags", {}), **tags, "ptexp.run_dir": str(self.run_dir)}
        parent = previous.get("tags", {}).get("mlflow.parentRunId") or os.environ.get(PARENT_RUN_ENV)
        if parent:
            tags["mlflow.parentRunId"] = parent  # a resumed job stays in its sweep
        self.record.update(
            run_id=previous.get("run_id"),
            run_name=previous.get("run_name", run_name),
            params={k: v[:6000] for k, v in {**params, **previous.get("params", {})}.items()},
            tags=tags,
            artifacts=previous.get("artifacts", []),
            status=None,
            start_time=previous.get("start_time") or now_ms(),
            end_time=None,
        )
        self.run_id = self.record["run_id"]
        self._save_record()
        if previous:
            self.run_id = self._send(self._catch_up) or self.run_id
        else:
            self._send(self._create)
        self._save_record()

    def _create(self) -> str:
        from mlflow.entities import Param

        r = self.record
        run = self.client.create_run(
            self.experiment_id, start_time=r["start_time"], tags=r["tags"], run_name=r["run_name"]
        )
        self.run_id = run.info.run_id
        items = [Param(k, v) for k, v in r["params"].items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])
        return self.run_id

    def _catch_up(self) -> str:
        """Replay the local copy into the store (only what it lacks); the run is created if it never was."""
        from ptexp.sync import sync_run_dir

        self._save_record()
        run_id, _ = sync_run_dir(self.run_dir, self.client, final=self.record.get("status") is not None)
        self.record = read_record(self.run_dir)  # sync may have added the run id and a link tag
        return run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        stamp = now_ms()
        with self.metrics_file.open("a") as f:
            f.write(json.dumps({"step": step, "timestamp": stamp, **metrics}) + "\n")
        if self.client is None:
            return
        from mlflow.entities import Metric

        batch = [Metric(k, float(v), stamp, step) for k, v in metrics.items()]
        self._send(lambda: self.client.log_batch(self.run_id, metrics=batch))

    def log_artifact(self, path: Path) -> None:
        self._remember_artifact(path, None)
        self._send(lambda: self.client.log_artifact(self.run_id, str(path)))

    def log_artifacts(self, folder: Path, artifact_path: str) -> None:
        self._remember_artifact(folder, artifact_path)
        self._send(lambda: self.client.log_artifacts(self.run_id, str(folder), artifact_path))

    def _remember_artifact(self, path: Path, artifact_path: str | None) -> None:
        if self.client is None:
            return
        entry = [str(Path(path).resolve()), artifact_path]
        if entry not in self.record["artifacts"]:
            self.record["artifacts"].append(entry)
            self._save_record()

    def set_tag(self, key: str, value: str) -> None:
        if self.client is None or not self.record:
            return
        self.record.setdefault("tags", {})[key] = value
        self._save_record()
        self._send(lambda: self.client.set_tag(self.run_id, key, value))

    def finish(self, status: str) -> None:
        """Record the final status, send it; if the store was away, try one catch-up before giving up."""
        if self.client is None or "status" not in self.record:
            return
        self.record.update(status=status, end_time=now_ms())
        self._save_record()
        if self.offline:
            self.retry_at = 0.0  # try now, whatever the back-off says
        self._send(lambda: self.client.set_terminated(self.run_id, status, self.record["end_time"]))
        if self.offline:
            print(
                f"[ptexp] warning: the MLflow store is still unreachable; the run is complete in {self.run_dir} "
                f"(metrics.jsonl, tracking.json). Upload it later with: python -m ptexp.sync {self.run_dir}",
                file=sys.stderr,
                flush=True,
            )

    # -- the one door to the store --------------------------------------------------------------------------

    def _send(self, call):
        """Run ``call`` against the store. Offline: skip until the retry time, then catch up from the local copy."""
        if self.client is None:
            return None
        if self.offline:
            if time.monotonic() < self.retry_at:
                return None
            try:
                self.run_id = self._catch_up()
            except Exception as err:
                self._go_offline(err)
                return None
            self.offline, self.retry_wait = False, RETRY_OFFLINE_S[0]
            print(f"[ptexp] MLflow store reachable again: run {self.run_id} caught up", file=sys.stderr, flush=True)
            return self.run_id  # the catch-up sent this call's data too
        try:
            return call()
        except Exception as err:
            self._go_offline(err)
            return None

    def _go_offline(self, err: BaseException) -> None:
        if not self.offline:
            print(
                f"[ptexp] warning: MLflow store unreachable ({type(err).__name__}: {short(err, 160)}); training "
                f"goes on, every metric is kept in {self.metrics_file}; it will be sent when the store answers "
                f"again, or run: python -m ptexp.sync {self.run_dir}",
                file=sys.stderr,
                flush=True,
            )
        else:
            self.retry_wait = min(self.retry_wait * 2, RETRY_OFFLINE_S[1])
        self.offline = True
        self.retry_at = time.monotonic() + self.retry_wait

    def _save_record(self) -> None:
        if self.record and "status" in self.record:
            self.record["run_id"] = self.run_id
            write_record(self.run_dir, self.record)

    @property
    def url_hint(self) -> str:
        if self.client is None:
            return "tracking disabled"
        return f"run {self.run_id}" if self.run_id else "MLflow offline: see metrics.jsonl"


class SweepParentCallback(Callback):
    """Creates one parent run per Hydra multirun before any job starts (so parallel launchers never race
    to create the SQLite store), hands its id to the jobs, and closes it when the sweep ends."""

    def __init__(self) -> None:
        self.client = self.run_id = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun: every process would start the sweep
            print("error: -m: a sweep cannot run under torchrun; valid: one torchrun command per run", file=sys.stderr)
            raise SystemExit(2)
        if not config.tracking.enabled:
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
        os.environ[PARENT_RUN_ENV] = self.run_id
        atexit.register(self._close, "FAILED")  # if the sweep dies before on_multirun_end
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

    def _close(self, status: str) -> None:
        try:
            if self.run_id is not None and self.client.get_run(self.run_id).info.status == "RUNNING":
                self.client.set_terminated(self.run_id, status)
        except Exception as err:
            print(f"[ptexp] warning: could not close the sweep's parent run ({short(err)})", file=sys.stderr)
        os.environ.pop(PARENT_RUN_ENV, None)


def config_params(cfg: DictConfig) -> dict[str, str]:
    """The flattened, resolved config (without Hydra's own node) as MLflow params."""
    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    container.pop("hydra", None)
    return flatten(container)

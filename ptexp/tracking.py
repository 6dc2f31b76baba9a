"""MLflow tracking: one run per job (a sweep's parent run: :mod:`ptexp.sweep`) and a local copy of what it logs.

The store is :mod:`ptexp.store`'s. Every metric is appended to ``metrics.jsonl`` in the job's output folder before
it is sent, and the run's params, tags, artifacts and final status are kept in
``tracking.json`` there. An unreachable store at start fails at once; one that goes away mid-run does not
stop training: the tracker goes offline (one warning line), retries now and then, and catches up when the
store answers again; ``python -m ptexp.sync RUN_DIR`` uploads whatever is still missing later.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ptexp.store import (
    METRICS,
    artifact_root,
    connect,
    flatten,
    now_ms,
    read_record,
    short,
    sync_run_dir,
    tracking_uri,
    write_record,
)
from ptexp.sweep import PARENT_RUN_ENV, SweepParentCallback

RETRY_OFFLINE_S = (30, 600)  # first retry after going offline, doubling up to the second


class RunTracker:
    """One job's MLflow run (or none, with tracking.enabled=false) plus its local copy in ``run_dir``:
    ``metrics.jsonl`` (every metric point) and ``tracking.json`` (store, run id, params, tags, artifacts, status).

    Every store call goes through :meth:`_send`: a failure takes the tracker offline instead of stopping the
    run; after ``RETRY_OFFLINE_S`` it tries again by replaying the local copy (:func:`ptexp.store.sync_run_dir`,
    which sends only what the store lacks), and at the end it tries once more before telling you to sync."""

    def __init__(self, cfg: DictConfig, run_dir: Path):
        self.run_dir = run_dir
        self.metrics_file = run_dir / METRICS
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


class NullTracker:
    """What ranks other than 0 log to: nothing. Rank 0 logs the metrics reduced over all ranks."""

    run_id = None
    url_hint = "logged by rank 0"

    def __init__(self, run_dir: Path):
        self.metrics_file = run_dir / METRICS

    def start(self, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_artifact(self, path: Path) -> None:
        pass

    def log_artifacts(self, folder: Path, artifact_path: str) -> None:
        pass

    def set_tag(self, key: str, value: str) -> None:
        pass

    def finish(self, status: str) -> None:
        pass


def config_params(cfg: DictConfig) -> dict[str, str]:
    """The flattened, resolved config (without Hydra's own node and the study section) as MLflow params."""
    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    container.pop("hydra", None)
    container.pop("study", None)  # the study's settings, not the run's (python -m ptexp.study)
    return flatten(container)


__all__ = ["NullTracker", "RunTracker", "SweepParentCallback", "config_params"]  # the callback: conf/config.yaml

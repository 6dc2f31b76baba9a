"""Upload what a run folder holds and its MLflow run lacks: ``python -m ptexp.sync RUN_DIR [RUN_DIR ...]``.

Every run folder keeps a local copy of its tracking (``tracking.json``: store, run id, params, tags, artifacts,
final status; ``metrics.jsonl``: every metric point). After an outage of the tracking server or database,
this replays that copy into the run, creating the run if it was never created. It is idempotent: a metric
point is sent only if the run lacks its (key, step, timestamp), a param only if its key is missing, so it can
be run again at any time. A sweep folder syncs every run folder below it.

Exit status: 0 synced (or nothing to do), 2 a bad argument or an unreachable store, as one line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ptexp.errors import UserError
from ptexp.tracking import RECORD, client_for, experiment_id_for, now_ms, read_record, short, write_record

STATUSES = ("FINISHED", "FAILED", "KILLED")


def read_metrics(run_dir: Path) -> list[tuple[str, float, int, int]]:
    """(key, value, timestamp, step) of every point in ``metrics.jsonl`` (a torn last line is skipped)."""
    path, points = run_dir / "metrics.jsonl", []
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

    ``final``: also set the recorded final status (``status`` is used only when none was recorded); otherwise (a
    catch-up during the run) the run is set RUNNING.
    """
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.exceptions import MlflowException

    record = read_record(run_dir)
    if record is None or "params" not in record:
        raise UserError(f"RUN_DIR: {run_dir} holds no {RECORD}; valid: a run folder written with tracking enabled")
    client = client or client_for(record["uri"])
    sent = {"metrics": 0, "params": 0, "artifacts": 0, "created": 0}

    run = None
    if record.get("run_id"):
        try:
            run = client.get_run(record["run_id"])
        except MlflowException as err:
            if err.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            record["tags"]["ptexp.synced_from_run_id"] = record["run_id"]
    if run is None:
        experiment_id = experiment_id_for(client, record["experiment"], record.get("artifact_location"))
        run = client.create_run(
            experiment_id, start_time=record.get("start_time"), tags=record["tags"], run_name=record.get("run_name")
        )
        sent["created"] = 1
    run_id = run.info.run_id
    if record.get("run_id") != run_id:
        record["run_id"] = run_id
        write_record(run_dir, record)

    params = [Param(k, v) for k, v in record["params"].items() if k not in run.data.params]
    tags = [RunTag(k, v) for k, v in record["tags"].items() if run.data.tags.get(k) != v]
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i : i + 100])
    for i in range(0, len(tags), 100):
        client.log_batch(run_id, tags=tags[i : i + 100])
    sent["params"] = len(params)

    points = read_metrics(run_dir)
    present = {
        (m.key, m.step, m.timestamp)
        for key in sorted({p[0] for p in points})
        for m in client.get_metric_history(run_id, key)
    }
    missing = [Metric(k, v, t, s) for k, v, t, s in points if (k, s, t) not in present]
    for i in range(0, len(missing), 1000):
        client.log_batch(run_id, metrics=missing[i : i + 1000])
    sent["metrics"] = len(missing)

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ptexp.sync", description=__doc__.split("\n\n")[0], allow_abbrev=False
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a run folder, or a sweep folder")
    parser.add_argument("--status", choices=STATUSES, help="final status for a run that never recorded one")
    args = parser.parse_args(argv)
    code = 0
    for given in map(Path, args.run_dirs):
        if not given.is_dir():
            print(f"error: RUN_DIR: {given} is not a folder; valid: a run folder (with {RECORD})", file=sys.stderr)
            return 2
        folders = [given] if (given / RECORD).is_file() else sorted(p.parent for p in given.glob(f"**/{RECORD}"))
        if not folders:
            print(f"error: RUN_DIR: no {RECORD} in or below {given}; valid: a run or sweep folder", file=sys.stderr)
            return 2
        for folder in folders:
            try:
                run_id, sent = sync_run_dir(folder, status=args.status)
            except UserError as err:
                print(f"error: {err}", file=sys.stderr)
                return 2
            except Exception as err:
                print(
                    f"error: {folder}: the MLflow store did not take the run ({type(err).__name__}: {short(err)}); "
                    "nothing local was changed, run this again when the store is back",
                    file=sys.stderr,
                )
                code = 2
                continue
            status = read_record(folder).get("status") or args.status or "still RUNNING (no final status recorded)"
            print(
                f"[ptexp] {folder}: run {run_id}{' (created)' if sent['created'] else ''}: sent {sent['metrics']} "
                f"metric points, {sent['params']} params, {sent['artifacts']} artifacts; status {status}",
                flush=True,
            )
    return code


if __name__ == "__main__":
    sys.exit(main())

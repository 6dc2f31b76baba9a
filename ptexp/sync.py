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
import sys
from pathlib import Path

from ptexp.errors import UserError
from ptexp.store import RECORD, read_record, short, sync_run_dir

STATUSES = ("FINISHED", "FAILED", "KILLED")


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

"""``python -m ptexp.report``: the command (see :mod:`ptexp.report`)."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from ptexp.checks import folder_problem
from ptexp.errors import OneLineParser
from ptexp.report.gap_plot import plot_gap, plot_gap_by_rows, plot_gap_by_size
from ptexp.report.intervals import DRAWS, SEED, Bootstrap
from ptexp.report.pages import Content, study_lines, write_html, write_md
from ptexp.report.plots import make_plots
from ptexp.report.runs import ReportError, connect, history, load_predictions, select
from ptexp.report.stats import DASH, FINISHED, LOSS, NA, check_runs, make_groups
from ptexp.report.study_runs import NEWEST, select_study
from ptexp.report.tables import FAILED_HEADERS, HEADERS, NUMERIC, display_row, failed_rows, text_table, write_csv
from ptexp.report.tasks import (
    TASK_HEADERS,
    TASK_NUMERIC,
    display_task_row,
    task_rows,
    wants_task_view,
    write_tasks_csv,
)
from ptexp.store import default_uri, short


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(
        prog="python -m ptexp.report",
        description="Side-by-side report (table, CSV, Markdown, self-contained HTML, PNG plots) of ptexp runs "
        "in MLflow, grouped by method, model, data and the method's variant (P, LoRA's r, ...), averaged over seeds.",
    )
    parser.add_argument("--output-root", default="outputs", help="ptexp's output_root (default: %(default)s)")
    parser.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: sqlite:///<abs --output-root>/mlflow.db, as ptexp)"
    )
    parser.add_argument("--experiment", default="ptexp", help="MLflow experiment name (default: %(default)s)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--sweep", metavar="PARENT_RUN_ID", help="the children of this sweep parent run")
    which.add_argument(
        "--latest-sweep",
        action="store_true",
        help="the most recent sweep (with no selection given: the most recent sweep with a finished run)",
    )
    which.add_argument("--all", action="store_true", help="every run of the experiment")
    which.add_argument(
        "--study",
        nargs="?",
        const=NEWEST,
        metavar="STUDY_RUN_ID",
        help="a study's outcome (python -m ptexp.study): each cell's chosen recipe over its seeds, with its grid and "
        "budget; without an id, the newest study",
    )
    parser.add_argument(
        "--filter",
        metavar="FILTER",
        help="MLflow search filter, e.g. \"tags.ptexp.method = 'prefix'\"; alone: over the whole experiment; "
        "with --sweep/--latest-sweep: within that sweep",
    )
    parser.add_argument("--out", type=Path, help="output folder (default: <output-root>/reports/<selection>)")
    parser.add_argument("--no-attach", action="store_true", help="do not log the report to the sweep's parent run")
    parser.add_argument(
        "--bootstrap-draws",
        type=positive,
        default=DRAWS,
        metavar="B",
        help=f"draws of the paired bootstrap behind each gap's 95%% interval (default: %(default)s; seed {SEED})",
    )
    args = parser.parse_args(argv)
    if args.study and args.filter:
        parser.error("--filter: not with --study (a study's runs are its chosen recipes); valid: one of them")
    return args


def positive(text: str) -> int:
    """An integer >= 1 (argparse's type)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: valid: an integer >= 1")
    return value


def task_view(client, finished: list, groups: list, draws: int) -> list:
    """The task view's rows (gaps to full with bootstrap intervals from each run's predictions), or [] when the
    groups do not form one."""
    if not wants_task_view(groups):
        return []
    with tempfile.TemporaryDirectory(prefix="ptexp-report-") as folder:
        for run in finished:
            run.predictions = load_predictions(client, run.run_id, Path(folder))
    return task_rows(groups, Bootstrap(draws))


def report(args: argparse.Namespace) -> int:
    problem = folder_problem(str(args.out)) if args.out is not None else None
    if problem is not None:
        raise ReportError(f"--out: {problem}; valid: a folder that can be written")
    uri = args.tracking_uri or default_uri(args.output_root)
    client, experiment_id = connect(uri, args.experiment)
    selection = select_study(client, experiment_id, args.study) if args.study else select(client, experiment_id, args)
    if selection.note is not None:
        print(f"[report] {selection.note}")
    if not selection.runs:
        raise ReportError(
            f"nothing to report: {selection.description} matched no run in experiment {args.experiment!r} ({uri})",
            status=1,
        )
    finished = [r for r in selection.runs if r.status == FINISHED]
    failed = [r for r in selection.runs if r.status != FINISHED]
    print(f"[report] {selection.description}: {len(finished)} finished run(s), {len(failed)} not finished; {uri}")
    if failed:
        print(f"\nNot finished, not averaged in ({len(failed)}):")
        print(text_table(FAILED_HEADERS, failed_rows(failed, limit=160)))
    if not finished:
        raise ReportError("nothing to report: no finished run in the selection", status=1)

    for run in finished:
        run.histories = {key: history(client, run.run_id, key) for key in (f"eval/{run.primary}", LOSS)}
    groups = make_groups(finished)
    warnings = check_runs(groups)
    tasks = task_view(client, finished, groups, args.bootstrap_draws)

    out = args.out or Path(args.output_root) / "reports" / selection.slug
    out.mkdir(parents=True, exist_ok=True)
    plots = make_plots(groups, out, warnings) + plot_gap(tasks, out, warnings)
    plots += plot_gap_by_size(tasks, out, warnings) + plot_gap_by_rows(tasks, out)
    meta = [("selection", selection.description), ("experiment", args.experiment), ("tracking URI", uri)]
    if selection.parent is not None and selection.parent.data.tags.get("ptexp.overrides") is not None:
        overrides = selection.parent.data.tags["ptexp.overrides"]  # a study's is its whole command line
        meta.append(("command", overrides if args.study else f"python -m ptexp -m {overrides}"))
    meta.append(("generated", time.strftime("%Y-%m-%d %H:%M:%S")))
    content = Content(f"ptexp report: {selection.description}", meta, groups, failed, warnings, plots, tasks)
    files = [out / "report.md", out / "report.csv", out / "report.html"]
    write_md(files[0], content)
    write_csv(files[1], groups)
    write_html(files[2], content)
    if tasks:
        files.append(out / "tasks.csv")
        write_tasks_csv(files[-1], tasks)
    elif (out / "tasks.csv").exists():  # from an earlier report into the same folder
        (out / "tasks.csv").unlink()

    print(f"\n{len(groups)} group(s); mean ± sample std over seeds ({DASH}: one seed; {NA}: not logged):\n")
    print(text_table(HEADERS, [display_row(g) for g in groups], NUMERIC))
    if tasks:
        print("\nBy task: final eval of the primary metric, gap to full fine-tuning (same task and model):\n")
        print(text_table(TASK_HEADERS, [display_task_row(r) for r in tasks], TASK_NUMERIC))
        if any(r.study for r in tasks):
            print("\nThe study's choice per cell (recipe, budget, each grid recipe's selection score and train s):")
            for line in study_lines(tasks):
                print(f"  {line}")
    sys.stdout.flush()  # the warnings (stderr) after the table, also when both go to one terminal
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    print(f"\nwrote {out.resolve()}/: {', '.join(p.name for p in files + plots)}")

    if selection.parent is not None and not args.no_attach:
        parent_id = selection.parent.info.run_id
        try:
            for path in files + plots:
                client.log_artifact(parent_id, str(path), artifact_path="report")
        except Exception as err:
            print(f"warning: could not attach the report to run {parent_id}: {short(err, 300)}", file=sys.stderr)
        else:
            names = ", ".join(f"report/{p.name}" for p in files + plots)
            print(f"attached to {'study' if args.study else 'sweep parent'} run {parent_id}: {names}")
    elif selection.parent is None and not args.no_attach:
        print("not attached: the selection is not a sweep or study (attach needs --sweep, --latest-sweep or --study)")
    return 0


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        status = report(args)
    except ReportError as err:
        print(f"error: {err}" if err.status == 2 else str(err), file=sys.stderr)
        status = err.status
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        status = 130
    sys.exit(status)


if __name__ == "__main__":
    main()

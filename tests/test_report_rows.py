"""The report on a data-size curve: runs that differ in their cap on train rows (``data.max_train_samples``) form
groups of their own, each method's gap is to full fine-tuning at the same rows, and the gap is drawn against the
rows (gap_to_full_by_train_rows.png)."""

from __future__ import annotations

import csv
import statistics

import pytest

from ptexp.report.gap_plot import ROWS_PLOT, SIZE_PLOT, gap_series, plot_gap_by_rows, train_rows_of
from ptexp.report.stats import FINISHED, RunData, make_groups
from ptexp.report.tasks import task_rows
from tests.test_report import check_png, printed_table, run_report

# (rows, method) -> final eval accuracy of seeds 1 and 2: prefix behind at 100 rows, further behind at 1,000
FINALS = {
    (100, "full"): (0.70, 0.72),
    (100, "prefix"): (0.69, 0.70),
    (1000, "full"): (0.85, 0.87),
    (1000, "prefix"): (0.80, 0.81),
}


def run(rows: int | None, method: str, seed: int, final: float, trained: int | None = None) -> RunData:
    metrics = {"eval/accuracy": final, "params/total": 22.7e6}
    if trained is not None:
        metrics["data/train_rows"] = trained
    return RunData(run_id=f"{rows}-{method}-{seed}", name=f"{method}-s{seed}", status=FINISHED, method=method,
                   model="minilm", data="sst2", prefix_length=None, seed=str(seed), metrics=metrics,
                   train_rows=rows)  # fmt: skip


def curve_runs() -> list[RunData]:
    return [run(k, m, s, f, trained=k) for (k, m), finals in FINALS.items() for s, f in enumerate(finals, start=1)]


def expected_gap(rows: int) -> float:
    return 100 * (statistics.fmean(FINALS[(rows, "prefix")]) - statistics.fmean(FINALS[(rows, "full")]))


def test_runs_with_other_train_rows_are_other_groups_and_each_gap_is_to_full_at_the_same_rows(tmp_path):
    groups = make_groups(curve_runs())
    assert sorted((g.train_rows, g.method, len(g.runs)) for g in groups) == [
        (100, "full", 2), (100, "prefix", 2), (1000, "full", 2), (1000, "prefix", 2)
    ]  # fmt: skip
    assert {g.task for g in groups} == {"sst2 (100 rows)", "sst2 (1,000 rows)"}
    rows = task_rows(groups)
    for r in rows:
        assert r.full is not None and r.full.train_rows == r.group.train_rows
    gaps = {r.group.train_rows: r.gap for r in rows if r.group.method == "prefix"}
    assert gaps == {100: pytest.approx(expected_gap(100)), 1000: pytest.approx(expected_gap(1000))}

    series = gap_series(rows, lambda r: (r.group.data, r.group.model, r.method), train_rows_of)
    assert list(series) == [("sst2", "minilm", "prefix")]
    assert [(x, r.gap) for x, r in series[("sst2", "minilm", "prefix")]] == [
        (100, pytest.approx(expected_gap(100))), (1000, pytest.approx(expected_gap(1000)))
    ]  # fmt: skip
    assert plot_gap_by_rows(rows, tmp_path) == [tmp_path / ROWS_PLOT]
    check_png(tmp_path / ROWS_PLOT)


def test_one_row_count_keeps_the_task_name_and_draws_no_rows_plot(tmp_path):
    runs = [r for r in curve_runs() if r.train_rows == 100]
    groups = make_groups(runs)
    assert {g.task for g in groups} == {"sst2"}
    (tmp_path / ROWS_PLOT).write_bytes(b"from an earlier report")
    assert plot_gap_by_rows(task_rows(groups), tmp_path) == []
    assert not (tmp_path / ROWS_PLOT).exists()


def test_the_rows_axis_is_what_full_fine_tuning_trained_on_where_logged():
    """An uncapped run counts at the rows it logged (data/train_rows); a cap above the split at the split's rows."""
    runs = [run(None, m, 1, f, trained=67349) for m, f in (("full", 0.9), ("prefix", 0.89))]
    runs += [run(100, m, 1, f) for m, f in (("full", 0.7), ("prefix", 0.69))]  # no data/train_rows: the cap
    rows = task_rows(make_groups(runs))
    assert {r.group.task for r in rows} == {"sst2 (all rows)", "sst2 (100 rows)"}
    points = gap_series(rows, lambda r: r.method, train_rows_of)["prefix"]
    assert [x for x, _ in points] == [100, 67349]


def log_curve_runs(root) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.create_experiment("ptexp", artifact_location=(root / "mlartifacts").as_uri())
    for r in curve_runs():
        tags = {"ptexp.method": r.method, "ptexp.model": "minilm", "ptexp.data": "sst2"}
        run_id = client.create_run(experiment, run_name=r.name, tags=tags).info.run_id
        for key, value in {"seed": r.seed, "data.max_train_samples": r.train_rows, "prefix_length": None}.items():
            client.log_param(run_id, key, str(value))
        for key, value in r.metrics.items():
            client.log_metric(run_id, key, value, step=1)
        client.set_terminated(run_id, "FINISHED")


@pytest.mark.slow  # a report subprocess; kept out of the default suite for time
def test_report_command_shows_a_task_row_per_train_rows_and_writes_the_rows_plot(tmp_path):
    log_curve_runs(tmp_path)
    out = tmp_path / "out"
    proc = run_report("--output-root", str(tmp_path), "--all", "--no-attach", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_png(out / ROWS_PLOT)
    assert not (out / SIZE_PLOT).exists()  # one model
    tasks = {(r["task"], r["method"]): r for r in printed_table(proc.stdout, "task")}
    assert set(tasks) == {(f"sst2 ({k} rows)", m) for k in ("100", "1,000") for m in ("full", "prefix")}
    with (out / "tasks.csv").open() as f:
        gaps = {(r["train_rows"], r["method"]): r["gap_to_full"] for r in csv.DictReader(f)}
    assert float(gaps[("100", "prefix")]) == pytest.approx(expected_gap(100))
    assert float(gaps[("1000", "prefix")]) == pytest.approx(expected_gap(1000))
    assert f"{ROWS_PLOT}: Gap to full fine-tuning against the train rows" in (out / "report.html").read_text()

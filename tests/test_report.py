"""The report CLI (``python -m ptexp.report``) on real tiny sweeps: table, files, plots, attachment, failed runs,
and the plain exits for an empty selection, a missing store and a run that lacks metrics; on hand-logged runs of
two tasks with different primary metrics: headline values, selection columns, the optimistic label, the task view."""

from __future__ import annotations

import base64
import csv
import re
import statistics
import subprocess
from pathlib import Path

import pytest
import scipy.stats

from tests.conftest import TINY, run_cli, runs_in

CURVES = ["trainer.eval_every=1", "trainer.log_every=1", "trainer.batch_size=16"]  # 4 steps, each one logged
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FILES = ("report.md", "report.csv", "report.html")
PLOTS = ("accuracy_vs_step.png", "loss_vs_step.png", "accuracy_vs_trainable_fraction.png")
LENGTH_PLOT = "accuracy_vs_prefix_length.png"
GAP_PLOT = "gap_to_full_by_task.png"
OPTIMISTIC = "best on eval (optimistic)"


def run_report(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return run_cli(*args, timeout=timeout, module="ptexp.report")


def split_sweep(root: Path):
    runs = runs_in(root / "mlflow.db")
    (parent,) = [r for r in runs if r.data.tags.get("ptexp.sweep") == "parent"]
    return parent, [r for r in runs if r.info.run_id != parent.info.run_id]


def printed_table(stdout: str, first_header: str) -> list[dict[str, str]]:
    """The rows (header -> cell) of the printed table whose header line starts with ``first_header``."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first_header + "  "))
    headers = re.split(r"\s{2,}", lines[start].strip())
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        assert len(cells) == len(headers), (headers, cells)
        rows.append(dict(zip(headers, cells, strict=True)))
    return rows


def printed_groups(stdout: str) -> dict[tuple[str, str], dict[str, str]]:
    """(method, variant) -> header -> cell of that row of the printed summary table."""
    return {(row["method"], row["variant"]): row for row in printed_table(stdout, "method")}


def md_summary_rows(md: str) -> list[str]:
    section = md.split("## Summary", 1)[1].split("\n## ", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("|")]
    return table[2:]  # without the header and the alignment row


def html_rows(page: str, table_id: str) -> int:
    match = re.search(rf'<table id="{table_id}">(.*?)</table>', page, re.S)
    return 0 if match is None else match.group(1).split("<tbody>", 1)[1].count("<tr>")


def check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 10_000, f"{path} is only {len(data)} bytes"
    import matplotlib.image

    height, width = matplotlib.image.imread(path).shape[:2]
    assert width >= 800 and height >= 400, (path, width, height)


def one_report_dir(root: Path) -> Path:
    (out,) = (root / "reports").iterdir()
    return out


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """One real sweep shared by the tests: the full_vs_prefix preset (full and prefix, seeds 1,2,3) on tiny."""
    root = tmp_path_factory.mktemp("report_sweep")
    proc = run_cli("-m", "experiment=full_vs_prefix", *TINY, *CURVES, f"output_root={root}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    parent, children = split_sweep(root)
    assert len(children) == 6 and all(r.info.status == "FINISHED" for r in children)
    return root, parent, children


def test_report_of_the_latest_sweep_writes_table_files_plots_and_attaches_them(sweep):
    root, parent, children = sweep
    proc = run_report("--output-root", str(root), "--bootstrap-draws", "200")  # no selection: the latest sweep
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr

    groups = printed_groups(proc.stdout)
    assert set(groups) == {("full", "—"), ("prefix", "P=20")}
    assert all(cells["seeds"] == "3" and cells["metric"] == "accuracy" for cells in groups.values())
    assert groups[("full", "—")]["trainable %"] == "100.0%"
    assert "±" in groups[("prefix", "P=20")]["final eval"]
    assert groups[("prefix", "P=20")]["selection score"] == "n/a"  # no selection split
    assert all(float(c["infer ms/example"]) > 0 and c["merged ms/example"] == "n/a" for c in groups.values())
    tasks = {row["method"]: row for row in printed_table(proc.stdout, "task")}  # a full group: the task view
    assert tasks["full"]["gap to full"] == "reference" and tasks["prefix P=20"]["gap to full"].endswith(" pts")
    # the runs wrote their predictions: the interval resamples seeds and dev examples
    assert tasks["prefix P=20"]["interval from"] == "seeds + dev examples" and tasks["full"]["interval from"] == "—"
    assert re.fullmatch(r"\[[-+]\d+\.\d\d, [-+]\d+\.\d\d\]( n\.s\.)?", tasks["prefix P=20"]["95% interval"])

    out = one_report_dir(root)
    assert parent.info.run_id[:8] in out.name
    assert len(md_summary_rows((out / "report.md").read_text())) == 2

    with (out / "report.csv").open() as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"full", "prefix"}
    for method, row in rows.items():
        runs = [r for r in children if r.data.tags["ptexp.method"] == method]
        final = [r.data.metrics["eval/accuracy"] for r in runs]
        assert row["seeds"] == "3" and sorted(row["seed_values"].split()) == ["1", "2", "3"]
        assert row["primary_metric"] == "accuracy"  # no ptexp.primary_metric tag: accuracy
        assert float(row["final_mean"]) == pytest.approx(statistics.fmean(final))
        assert float(row["final_std"]) == pytest.approx(statistics.stdev(final))
        assert float(row["accuracy_mean"]) == pytest.approx(statistics.fmean(final))
        best = [r.data.metrics["eval/best_accuracy"] for r in runs]
        assert float(row["best_on_eval_optimistic_mean"]) == pytest.approx(statistics.fmean(best))
        assert float(row["best_on_eval_optimistic_mean"]) >= float(row["final_mean"]) - 1e-12
        assert row["selection_score_mean"] == "n/a" and row["selected_on_selection_mean"] == "n/a"
        assert float(row["trainable_params"]) == runs[0].data.metrics["params/trainable"]
        infer = [r.data.metrics["infer/ms_per_example"] for r in runs]  # the inference timing; neither merges
        assert float(row["infer_ms_per_example_mean"]) == pytest.approx(statistics.fmean(infer))
        assert float(row["infer_batch_size"]) == 32 and row["merged_ms_per_example_mean"] == "n/a"
    assert rows["prefix"]["prefix_length"] == "20" and rows["full"]["prefix_length"] == ""
    assert rows["prefix"]["variant"] == "P=20" and rows["full"]["variant"] == ""
    assert float(rows["full"]["trainable_pct"]) == pytest.approx(100.0)

    for name in (*PLOTS, GAP_PLOT):
        check_png(out / name)
    assert not (out / LENGTH_PLOT).exists()  # one prefix length only
    with (out / "tasks.csv").open() as f:
        gaps = {r["method"]: r for r in csv.DictReader(f)}
    means = {m: float(rows[m]["final_mean"]) for m in rows}
    assert float(gaps["prefix"]["gap_to_full"]) == pytest.approx(100 * (means["prefix"] - means["full"]))
    assert gaps["prefix"]["gap_unit"] == "points" and float(gaps["full"]["gap_to_full"]) == 0.0
    low, high = float(gaps["prefix"]["gap_low"]), float(gaps["prefix"]["gap_high"])
    assert low <= high and gaps["prefix"]["gap_distinguishable"] == str(low > 0 or high < 0).lower()
    assert tasks["prefix P=20"]["95% interval"].endswith("n.s.") == (gaps["prefix"]["gap_distinguishable"] == "false")

    page = (out / "report.html").read_text()
    assert html_rows(page, "summary") == 2 and html_rows(page, "failed") == 0 and html_rows(page, "tasks") == 2
    assert OPTIMISTIC in page and "best accuracy" not in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == len(PLOTS) + 1  # and the gap plot
    assert all(base64.b64decode(data)[:8] == PNG_MAGIC for data in images)
    assert "<style>" in page and 'src="http' not in page and "<link" not in page  # self-contained

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    attached = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert attached == {f"report/{name}" for name in (*FILES, "tasks.csv", *PLOTS, GAP_PLOT)}
    assert f"attached to sweep parent run {parent.info.run_id}" in proc.stdout


def test_filter_selects_within_the_experiment_and_does_not_attach(sweep, tmp_path):
    root, _, _ = sweep
    proc = run_report("--output-root", str(root), "--filter", "tags.ptexp.method = 'prefix'", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert set(printed_groups(proc.stdout)) == {("prefix", "P=20")}
    assert "not attached" in proc.stdout
    with (tmp_path / "report.csv").open() as f:
        assert [r["seeds"] for r in csv.DictReader(f)] == ["3"]
    assert "task  model" not in proc.stdout and not (tmp_path / "tasks.csv").exists()  # one task, no full group
    assert not (tmp_path / GAP_PLOT).exists()


def test_empty_selection_exits_1_with_a_plain_message(sweep, tmp_path):
    root, _, _ = sweep
    proc = run_report("--output-root", str(root), "--filter", "tags.ptexp.method = 'nothing'", "--out", str(tmp_path))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "nothing to report" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "report.md").exists()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--filter", "tags.ptexp.method == = 'x'"], "MLflow search failed"),
        (["--sweep", "0123456789abcdef"], "--sweep: no run"),
        (["--experiment", "nope"], "experiment 'nope' not found"),
    ],
)
def test_bad_selection_exits_2_with_one_error_line(sweep, extra, needle):
    root, _, _ = sweep
    proc = run_report("--output-root", str(root), *extra)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and needle in proc.stderr, proc.stderr


def test_missing_store_exits_2_with_one_clear_line(tmp_path):
    proc = run_report("--output-root", str(tmp_path / "nowhere"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: no MLflow store at") and "nowhere" in line
    assert not (tmp_path / "nowhere").exists()  # nothing created on the way


@pytest.mark.slow  # kept out of the default suite for time; `make test-slow` runs it
def test_failed_run_is_listed_apart_and_not_averaged(tmp_path):
    # The second job's loss diverges (huge lr, no clipping, no warm-up): it ends FAILED with ptexp.error set.
    run_cli(
        "-m",
        "method=full",
        "optimizer.lr=3e-5,1e12",
        "trainer.grad_clip=null",
        "optimizer.warmup_ratio=0",
        *TINY,
        f"output_root={tmp_path}",
    )
    parent, children = split_sweep(tmp_path)
    (failed,) = [r for r in children if r.info.status == "FAILED"]
    (finished,) = [r for r in children if r.info.status == "FINISHED"]

    proc = run_report("--output-root", str(tmp_path), "--sweep", parent.info.run_id, "--no-attach")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    failed_lines = [line for line in proc.stdout.splitlines() if failed.info.run_id in line]
    assert len(failed_lines) == 1 and "FAILED" in failed_lines[0] and "TrainingDiverged" in failed_lines[0]
    assert printed_groups(proc.stdout)[("full", "—")]["seeds"] == "1"  # seeds: the finished run only

    out = one_report_dir(tmp_path)
    with (out / "report.csv").open() as f:
        (row,) = csv.DictReader(f)
    assert row["seeds"] == "1" and row["run_ids"] == finished.info.run_id
    assert float(row["final_mean"]) == pytest.approx(finished.data.metrics["eval/accuracy"])
    assert float(row["final_std"]) == 0.0  # one seed
    assert not (out / GAP_PLOT).exists()  # full fine-tuning only: no gap to draw
    page = (out / "report.html").read_text()
    assert html_rows(page, "summary") == 1 and html_rows(page, "failed") == 1
    assert failed.info.run_id in page and "TrainingDiverged" in page
    md = (out / "report.md").read_text()
    assert len(md_summary_rows(md)) == 1 and failed.info.run_id in md.split("## Failed", 1)[1]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.list_artifacts(parent.info.run_id, "report") == []  # --no-attach


@pytest.mark.slow  # kept out of the default suite for time; `make test-slow` runs it
def test_prefix_length_sweep_preset_gets_the_prefix_length_plot(tmp_path):
    proc = run_cli("-m", "experiment=prefix_length_sweep", *TINY, "trainer.max_steps=1", f"output_root={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    parent, children = split_sweep(tmp_path)
    assert sorted(int(r.data.params["prefix_length"]) for r in children) == [1, 5, 10, 20, 50]

    proc = run_report("--output-root", str(tmp_path), "--latest-sweep", "--no-attach")
    assert proc.returncode == 0, proc.stderr[-3000:]
    groups = printed_groups(proc.stdout)
    assert [p for _, p in groups] == ["P=1", "P=5", "P=10", "P=20", "P=50"]  # in numeric order
    assert all(cells["seeds"] == "1" and "± —" in cells["final eval"] for cells in groups.values())  # one seed

    out = one_report_dir(tmp_path)
    assert out.name.endswith(parent.info.run_id[:8])  # the latest sweep, in <output_root>/reports/
    with (out / "report.csv").open() as f:
        rows = sorted(csv.DictReader(f), key=lambda r: int(r["prefix_length"]))
    trainable = [float(r["trainable_params"]) for r in rows]
    assert trainable == sorted(trainable) and len(set(trainable)) == 5
    check_png(out / LENGTH_PLOT)
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(PLOTS) + 1 and html_rows(page, "summary") == 5


def test_a_missing_metric_is_shown_as_na_with_a_warning(tmp_path):
    """Runs logged by hand into a fresh store: neither has memory/peak_mb, the second has no timing either."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("ptexp", artifact_location=(tmp_path / "mlartifacts").as_uri())
    tags = {"ptexp.method": "prefix", "ptexp.model": "tiny", "ptexp.data": "embedded"}
    ids = []
    for seed, complete in ((1, True), (2, False)):
        run_id = client.create_run(experiment, run_name=f"handmade-s{seed}", tags=tags).info.run_id
        client.log_param(run_id, "seed", str(seed))
        client.log_param(run_id, "prefix_length", "4")
        for step, (acc, loss) in enumerate([(0.5, 0.70), (0.6 + seed / 100, 0.65)], start=1):
            client.log_metric(run_id, "eval/accuracy", acc, step=step)
            client.log_metric(run_id, "train/loss", loss, step=step)
        client.log_metric(run_id, "eval/macro_f1", 0.5, step=2)
        for key, value in {"params/trainable": 100, "params/total": 10_000, "params/trainable_pct": 1.0}.items():
            client.log_metric(run_id, key, value, step=0)
        if complete:
            for key in ("time/train_s", "throughput/train_samples_per_s"):
                client.log_metric(run_id, key, 10.0, step=2)
        client.set_terminated(run_id, "FINISHED")
        ids.append(run_id)

    proc = run_report("--output-root", str(tmp_path), "--all")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    (cells,) = printed_groups(proc.stdout).values()
    assert cells["seeds"] == "2" and cells["final eval"] == "0.6150 ± 0.0071"  # final accuracy: 0.61 and 0.62
    assert cells[OPTIMISTIC] == "0.6150 ± 0.0071"  # no eval/best_accuracy logged: the max of each history
    assert cells["accuracy"] == cells["final eval"] and cells["macro-F1"] == "0.5000 ± 0.0000"
    assert cells["train s"] == "10.0" and cells["peak MB"] == "n/a" and cells["adapter size"] == "n/a"
    assert cells["infer ms/example"] == "n/a"  # logged before the inference timing existed: no warning either
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    (first,) = [w for w in warnings if ids[0] in w]
    (second,) = [w for w in warnings if ids[1] in w]
    assert "memory/peak_mb" in first and "time/train_s" not in first
    assert not any("infer/" in w for w in warnings)
    assert "memory/peak_mb" in second and "time/train_s" in second

    (out,) = (tmp_path / "reports").iterdir()
    with (out / "report.csv").open() as f:
        (row,) = csv.DictReader(f)
    assert row["peak_memory_mb_mean"] == "n/a" and row["adapter_bytes"] == "n/a"
    assert float(row["train_s_mean"]) == 10.0
    assert "n/a" in (out / "report.html").read_text()


# Hand-logged runs of two tasks whose primary metrics differ: (data, method, seed) -> the eval history of the primary
# metric (steps 1, 2, 3; the last is the final value) and the selection split's history (best at step 2).
MIXED = {
    ("glue_cola", "full", 1): ([0.30, 0.52, 0.41], [0.20, 0.48, 0.33]),
    ("glue_cola", "full", 2): ([0.28, 0.49, 0.45], [0.25, 0.50, 0.31]),
    ("glue_cola", "prefix", 1): ([0.10, 0.33, 0.21], [0.12, 0.30, 0.22]),
    ("glue_cola", "prefix", 2): ([0.12, 0.29, 0.25], [0.09, 0.35, 0.21]),
    ("glue_stsb", "full", 1): ([0.70, 0.86, 0.84], [0.71, 0.88, 0.80]),
    ("glue_stsb", "full", 2): ([0.72, 0.85, 0.83], [0.69, 0.87, 0.82]),
    ("glue_stsb", "prefix", 1): ([0.50, 0.66, 0.60], [0.52, 0.67, 0.61]),
    ("glue_stsb", "prefix", 2): ([0.55, 0.64, 0.61], [0.51, 0.70, 0.58]),
}
PRIMARY = {"glue_cola": "mcc", "glue_stsb": "pearson"}
SELECT_BEST = {"glue_cola": "True", "glue_stsb": "False"}  # STS-B: the eval value at the selected step is read back


def log_mixed_runs(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("ptexp", artifact_location=(tmp_path / "mlartifacts").as_uri())
    for (data, method, seed), (evals, selection) in MIXED.items():
        primary = PRIMARY[data]
        tags = {"ptexp.method": method, "ptexp.model": "tiny", "ptexp.data": data, "ptexp.primary_metric": primary}
        run_id = client.create_run(experiment, run_name=f"{data}-{method}-s{seed}", tags=tags).info.run_id
        for key, value in {"seed": seed, "prefix_length": 10 if method == "prefix" else None}.items():
            client.log_param(run_id, key, str(value))
        client.log_param(run_id, "trainer.select_best", SELECT_BEST[data])
        for step, (value, chosen) in enumerate(zip(evals, selection, strict=True), start=1):
            metrics = {f"eval/{primary}": value, f"eval/best_{primary}": max(evals[:step]), "train/loss": 1 / step}
            metrics |= {f"selection/{primary}": chosen, f"selection/best_{primary}": max(selection[:step])}
            metrics |= {"selection/best_step": 1 + selection.index(max(selection[:step]))}
            if primary == "mcc":
                metrics |= {"eval/accuracy": 0.5 + value / 2, "eval/macro_f1": 0.4 + value / 2}
            for key, v in metrics.items():
                client.log_metric(run_id, key, v, step=step)
        total = 1000 if method == "full" else 100_000
        summary = {"params/trainable": 1000, "params/total": total, "params/trainable_pct": 100_000 / total}
        summary |= {"time/train_s": 1.0, "throughput/train_samples_per_s": 5.0, "memory/peak_mb": 10.0}
        for key, value in summary.items():
            client.log_metric(run_id, key, value, step=3)
        client.set_terminated(run_id, "FINISHED")


def pm(values: list[float]) -> str:
    return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"


def test_mixed_tasks_headline_selection_columns_and_gap_to_full(tmp_path):
    log_mixed_runs(tmp_path)
    proc = run_report("--output-root", str(tmp_path), "--all", "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    out = tmp_path / "out"

    def values(data, method, pick) -> list[float]:
        return [pick(*MIXED[(data, method, seed)]) for seed in (1, 2)]

    summary = {(r["data"], r["method"]): r for r in printed_table(proc.stdout, "method")}
    assert len(summary) == 4
    for (data, method), row in summary.items():
        assert row["metric"] == PRIMARY[data] and row["seeds"] == "2"
        assert row["final eval"] == pm(values(data, method, lambda e, s: e[-1]))
        assert row[OPTIMISTIC] == pm(values(data, method, lambda e, s: max(e)))  # the eval split's own best
        assert row["selection score"] == pm(values(data, method, lambda e, s: max(s)))
        # select_best (CoLA): the final eval value; else (STS-B): the eval value at the selected step (2)
        assert row["selected on selection split"] == pm(
            values(data, method, (lambda e, s: e[-1]) if data == "glue_cola" else (lambda e, s: e[1]))
        )
        assert (row["accuracy"] == "n/a") == (data == "glue_stsb")  # regression: no accuracy, no macro-F1
        assert (row["macro-F1"] == "n/a") == (data == "glue_stsb")

    finals = {(d, m): statistics.fmean(values(d, m, lambda e, s: e[-1])) for d, m in summary}
    gaps = {d: 100 * (finals[(d, "prefix")] - finals[(d, "full")]) for d in PRIMARY}
    tasks = {(r["task"], r["method"]): r for r in printed_table(proc.stdout, "task")}
    assert set(tasks) == {(d, m) for d in PRIMARY for m in ("full", "prefix P=10")}
    for data, gap in gaps.items():
        assert tasks[(data, "prefix P=10")]["gap to full"] == f"{gap:+.2f} pts"
        assert tasks[(data, "full")]["gap to full"] == "reference"
        assert tasks[(data, "prefix P=10")]["metric"] == PRIMARY[data]
    with (out / "tasks.csv").open() as f:
        rows = {(r["task"], r["method"]): r for r in csv.DictReader(f)}
    assert len(rows) == 4
    for data, gap in gaps.items():
        assert float(rows[(data, "prefix")]["gap_to_full"]) == pytest.approx(gap)
        assert float(rows[(data, "prefix")]["full_mean"]) == pytest.approx(finals[(data, "full")])
        assert float(rows[(data, "prefix")]["mean"]) == pytest.approx(finals[(data, "prefix")])
        assert rows[(data, "prefix")]["metric"] == PRIMARY[data] and rows[(data, "prefix")]["gap_unit"] == "points"
        assert rows[(data, "prefix")]["prefix_length"] == "10" and float(rows[(data, "full")]["gap_to_full"]) == 0
        # no predictions artifact: a paired t-interval over the two seeds alone
        diffs = [100 * (MIXED[(data, "prefix", s)][0][-1] - MIXED[(data, "full", s)][0][-1]) for s in (1, 2)]
        half = scipy.stats.t.ppf(0.975, 1) * statistics.stdev(diffs) / 2**0.5
        assert float(rows[(data, "prefix")]["gap_low"]) == pytest.approx(gap - half)
        assert float(rows[(data, "prefix")]["gap_high"]) == pytest.approx(gap + half)
        assert rows[(data, "prefix")]["gap_interval_from"] == "seeds only: no predictions artifact"
        assert tasks[(data, "prefix P=10")]["interval from"] == "seeds only: no predictions artifact"
    assert rows[("glue_cola", "prefix")]["study"] == "" and "### Recipes" not in (out / "report.md").read_text()

    with (out / "report.csv").open() as f:
        csv_rows = {(r["data"], r["method"]): r for r in csv.DictReader(f)}
    assert float(csv_rows[("glue_stsb", "prefix")]["final_mean"]) == pytest.approx(finals[("glue_stsb", "prefix")])
    assert csv_rows[("glue_stsb", "full")]["accuracy_mean"] == "n/a"
    assert csv_rows[("glue_cola", "full")]["primary_metric"] == "mcc"

    check_png(out / GAP_PLOT)
    check_png(out / "loss_vs_step.png")
    assert not list(out.glob("*_vs_trainable_fraction.png")) and not (out / "mcc_vs_step.png").exists()
    assert "warning: the groups have different primary metrics (mcc, pearson)" in proc.stderr
    page = (out / "report.html").read_text()
    assert html_rows(page, "summary") == 4 and html_rows(page, "tasks") == 4
    assert OPTIMISTIC in page and "best accuracy" not in page and page.count("data:image/png;base64,") == 2
    md = (out / "report.md").read_text()
    assert "## Tasks" in md and OPTIMISTIC in md and f"({GAP_PLOT})" in md


def handmade_run(method: str, seed: int, params: dict[str, str], accuracy: float):
    """An MLflow run as :func:`ptexp.report.runs.run_data` reads it (info, tags, params, metrics), made in memory."""
    from types import SimpleNamespace

    run_id = f"{method}-{'-'.join(params.values())}-s{seed}"
    info = SimpleNamespace(run_id=run_id, run_name=run_id, status="FINISHED")
    tags = {"ptexp.method": method, "ptexp.model": "tiny", "ptexp.data": "embedded"}
    data = SimpleNamespace(tags=tags, params={"seed": str(seed), **params}, metrics={"eval/accuracy": accuracy})
    return SimpleNamespace(info=info, data=data)


def test_a_lora_rank_sweep_and_an_ia3_target_sweep_give_one_group_per_variant():
    """Groups follow each method's variant keys (lora.r, ia3.target_modules): no averaging across them."""
    from ptexp.report.runs import run_data
    from ptexp.report.stats import check_runs, make_groups
    from ptexp.report.tables import CSV_HEADERS, HEADERS, csv_row, display_row

    runs = [
        run_data(handmade_run("lora", seed, {"lora.r": str(r), "prefix_length": "None"}, 0.5 + r / 100))
        for r in (16, 4, 8)
        for seed in (1, 2)
    ]
    for targets in (["key", "value", "output.dense"], ["key", "value"]):
        runs += [run_data(handmade_run("ia3", seed, {"ia3.target_modules": str(targets)}, 0.6)) for seed in (1, 2)]
    groups = make_groups(runs)
    labels = ["ia3 key+value", "ia3 key+value+output.dense", "lora r=4", "lora r=8", "lora r=16"]
    assert [g.label for g in groups] == labels  # ranks in numeric order
    assert [len(g.runs) for g in groups] == [2] * 5
    assert [g.final.mean for g in groups[2:]] == pytest.approx([0.54, 0.58, 0.66])
    assert not [w for w in check_runs(groups) if "differ" in w]  # before: one lora group, "configs differ in lora.r"
    column = HEADERS.index("variant")
    assert [display_row(g)[column] for g in groups] == ["key+value", "key+value+output.dense", "r=4", "r=8", "r=16"]
    rows = [dict(zip(CSV_HEADERS, csv_row(g), strict=True)) for g in groups]
    assert [(r["variant"], r["prefix_length"], r["seeds"]) for r in rows[2:]] == [
        ("r=4", "", 2),
        ("r=8", "", 2),
        ("r=16", "", 2),
    ]


def test_run_names_carry_the_methods_variant(tiny_config):
    from ptexp.trainer import run_name

    assert run_name(tiny_config("method=lora", "lora.r=4", "seed=3")) == "lora-r4-tiny-embedded-s3"
    assert run_name(tiny_config("method=prefix", "prefix_length=7", "seed=3")) == "prefix-P7-tiny-embedded-s3"
    assert run_name(tiny_config("method=full", "seed=3")) == "full-tiny-embedded-s3"

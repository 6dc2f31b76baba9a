"""The report CLI (``python -m ptexp.report``) on real tiny sweeps: table, files, plots, attachment, failed runs,
and the plain exits for an empty selection, a missing store and a run that lacks metrics."""

from __future__ import annotations

import base64
import csv
import re
import statistics
import subprocess
from pathlib import Path

import pytest

from tests.conftest import TINY, run_cli, runs_in

CURVES = ["trainer.eval_every=1", "trainer.log_every=1", "trainer.batch_size=16"]  # 4 steps, each one logged
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FILES = ("report.md", "report.csv", "report.html")
PLOTS = ("accuracy_vs_step.png", "loss_vs_step.png", "accuracy_vs_trainable_fraction.png")
LENGTH_PLOT = "accuracy_vs_prefix_length.png"


def run_report(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return run_cli(*args, timeout=timeout, module="ptexp.report")


def split_sweep(root: Path):
    runs = runs_in(root / "mlflow.db")
    (parent,) = [r for r in runs if r.data.tags.get("ptexp.sweep") == "parent"]
    return parent, [r for r in runs if r.info.run_id != parent.info.run_id]


def printed_groups(stdout: str) -> dict[tuple[str, str], list[str]]:
    """(method, prefix_length) -> the cells of that row of the printed summary table."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("method  model"))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows[(cells[0], cells[3])] = cells
    return rows


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
    proc = run_report("--output-root", str(root))  # no selection: the latest sweep
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr

    groups = printed_groups(proc.stdout)
    assert set(groups) == {("full", "—"), ("prefix", "20")}
    assert all(cells[4] == "3" for cells in groups.values())  # seeds
    assert groups[("full", "—")][6] == "100.0%"
    assert "±" in groups[("prefix", "20")][7]

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
        assert float(row["final_accuracy_mean"]) == pytest.approx(statistics.fmean(final))
        assert float(row["final_accuracy_std"]) == pytest.approx(statistics.stdev(final))
        assert float(row["best_accuracy_mean"]) >= float(row["final_accuracy_mean"]) - 1e-12
        assert float(row["trainable_params"]) == runs[0].data.metrics["params/trainable"]
    assert rows["prefix"]["prefix_length"] == "20" and rows["full"]["prefix_length"] == ""
    assert float(rows["full"]["trainable_pct"]) == pytest.approx(100.0)

    for name in PLOTS:
        check_png(out / name)
    assert not (out / LENGTH_PLOT).exists()  # one prefix length only

    page = (out / "report.html").read_text()
    assert html_rows(page, "summary") == 2 and html_rows(page, "failed") == 0
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == len(PLOTS)
    assert all(base64.b64decode(data)[:8] == PNG_MAGIC for data in images)
    assert "<style>" in page and 'src="http' not in page and "<link" not in page  # self-contained

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    attached = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert attached == {f"report/{name}" for name in (*FILES, *PLOTS)}
    assert f"attached to sweep parent run {parent.info.run_id}" in proc.stdout


def test_filter_selects_within_the_experiment_and_does_not_attach(sweep, tmp_path):
    root, _, _ = sweep
    proc = run_report("--output-root", str(root), "--filter", "tags.ptexp.method = 'prefix'", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert set(printed_groups(proc.stdout)) == {("prefix", "20")}
    assert "not attached" in proc.stdout
    with (tmp_path / "report.csv").open() as f:
        assert [r["seeds"] for r in csv.DictReader(f)] == ["3"]


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
    assert printed_groups(proc.stdout)[("full", "—")][4] == "1"  # seeds: the finished run only

    out = one_report_dir(tmp_path)
    with (out / "report.csv").open() as f:
        (row,) = csv.DictReader(f)
    assert row["seeds"] == "1" and row["run_ids"] == finished.info.run_id
    assert float(row["final_accuracy_mean"]) == pytest.approx(finished.data.metrics["eval/accuracy"])
    assert float(row["final_accuracy_std"]) == 0.0  # one seed
    page = (out / "report.html").read_text()
    assert html_rows(page, "summary") == 1 and html_rows(page, "failed") == 1
    assert failed.info.run_id in page and "TrainingDiverged" in page
    md = (out / "report.md").read_text()
    assert len(md_summary_rows(md)) == 1 and failed.info.run_id in md.split("## Failed", 1)[1]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.list_artifacts(parent.info.run_id, "report") == []  # --no-attach


def test_prefix_length_sweep_preset_gets_the_prefix_length_plot(tmp_path):
    proc = run_cli("-m", "experiment=prefix_length_sweep", *TINY, "trainer.max_steps=1", f"output_root={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    parent, children = split_sweep(tmp_path)
    assert sorted(int(r.data.params["prefix_length"]) for r in children) == [1, 5, 10, 20, 50]

    proc = run_report("--output-root", str(tmp_path), "--latest-sweep", "--no-attach")
    assert proc.returncode == 0, proc.stderr[-3000:]
    groups = printed_groups(proc.stdout)
    assert sorted(int(p) for _, p in groups) == [1, 5, 10, 20, 50]
    assert all(cells[4] == "1" and "± —" in cells[7] for cells in groups.values())  # one seed: no std

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
    assert cells[4] == "2" and cells[7] == "0.6150 ± 0.0071"  # final accuracy: 0.61 and 0.62
    assert cells[8] == "0.6150 ± 0.0071"  # best = max of each history
    assert cells[10] == "10.0" and cells[12] == "n/a" and cells[13] == "n/a"  # train s (one run), peak MB, adapter
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    (first,) = [w for w in warnings if ids[0] in w]
    (second,) = [w for w in warnings if ids[1] in w]
    assert "memory/peak_mb" in first and "time/train_s" not in first
    assert "memory/peak_mb" in second and "time/train_s" in second

    (out,) = (tmp_path / "reports").iterdir()
    with (out / "report.csv").open() as f:
        (row,) = csv.DictReader(f)
    assert row["peak_memory_mb_mean"] == "n/a" and row["adapter_bytes"] == "n/a"
    assert float(row["train_s_mean"]) == 10.0
    assert "n/a" in (out / "report.html").read_text()

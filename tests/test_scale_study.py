"""experiment=scale_study (full, prefix and LoRA on MiniLM and MPNet-base, SST-2 and RTE, 2 seeds): the preset's
sweep and selection settings, and the report's gap to full against model size (gap_to_full_by_model_size.png) on
runs logged by hand into a real MLflow store."""

from __future__ import annotations

import csv
import random
import statistics
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from ptexp.data import use_root
from ptexp.experiment import prepare_config
from ptexp.report.gap_plot import GAP_PLOT, SIZE_PLOT, gap_by_size
from ptexp.report.stats import FINISHED, make_groups
from ptexp.report.tasks import task_rows
from tests.conftest import CONF_DIR, make_config, run_cli, runs_in
from tests.test_report import check_png, printed_table, run_report


def test_scale_study_preset_sweeps_two_models_two_tasks_three_methods_two_seeds():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=scale_study"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert dict(params) == {
        "model": "minilm,mpnet_base",
        "data": "sst2,glue_rte",
        "method": "full,prefix,lora",
        "seed": "1,2",
    }
    assert cfg.data.name == "sst2" and cfg.model.name == "minilm"
    assert cfg.data.selection_rows == 150 and cfg.data.selection_fraction is None and cfg.trainer.select_best is True
    assert cfg.data.max_train_samples == 300 and cfg.trainer.epochs == 3


@pytest.mark.parametrize("model", ["minilm", "mpnet_base"])
@pytest.mark.parametrize(("data", "folder"), [("sst2", "SST-2"), ("glue_rte", "RTE")])
def test_each_scale_study_job_keeps_the_selection_split_and_reads_its_folder_under_data_root(model, data, folder):
    """A job as the sweeper composes it: the preset's data settings survive the swept data preset."""
    cfg = make_config("experiment=scale_study", f"model={model}", f"data={data}", "method=prefix", "data.root=/glue")
    prepare_config(cfg)
    assert (cfg.model.name, cfg.data.name) == (model, data)
    assert cfg.data.selection_rows == 150 and cfg.data.max_train_samples == 300
    assert cfg.trainer.select_best is True
    use_root(cfg.data)
    assert cfg.data.data_dir == f"/glue/{folder}"


# Hand-logged runs of one task on two models: (model, method) -> the final eval accuracy of seeds 1 and 2.
SIZES = {"minilm": 22.7e6, "mpnet_base": 109.5e6}
FINALS = {
    ("minilm", "full"): (0.86, 0.88),
    ("minilm", "prefix"): (0.80, 0.83),
    ("minilm", "lora"): (0.84, 0.85),
    ("mpnet_base", "full"): (0.91, 0.93),
    ("mpnet_base", "prefix"): (0.90, 0.90),
    ("mpnet_base", "lora"): (0.92, 0.925),
}
ADDED = {"full": 0, "prefix": 73_728, "lora": 147_456}  # adapters count in params/total: the size is full's


def log_scale_runs(root: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.create_experiment("ptexp", artifact_location=(root / "mlartifacts").as_uri())
    for (model, method), finals in FINALS.items():
        tags = {"ptexp.method": method, "ptexp.model": model, "ptexp.data": "sst2", "ptexp.primary_metric": "accuracy"}
        for seed, final in enumerate(finals, start=1):
            run_id = client.create_run(experiment, run_name=f"{model}-{method}-s{seed}", tags=tags).info.run_id
            for key, value in {"seed": seed, "prefix_length": 20 if method == "prefix" else None}.items():
                client.log_param(run_id, key, str(value))
            for step, value in ((1, final - 0.05), (2, final)):
                client.log_metric(run_id, "eval/accuracy", value, step=step)
                client.log_metric(run_id, "train/loss", 0.7 / step, step=step)
            total = SIZES[model] + ADDED[method]
            trainable = total if method == "full" else ADDED[method]
            summary = {
                "params/total": total,
                "params/trainable": trainable,
                "params/trainable_pct": 100 * trainable / total,
            }
            summary |= {"time/train_s": 1.0, "throughput/train_samples_per_s": 5.0, "memory/peak_mb": 10.0}
            for key, value in summary.items():
                client.log_metric(run_id, key, value, step=2)
            client.set_terminated(run_id, "FINISHED")


def series_from_store(root: Path, *selection: str) -> dict:
    """gap_by_size over the runs the report would select with these arguments."""
    from ptexp.report.__main__ import parse_args
    from ptexp.report.runs import connect, select

    args = parse_args(["--output-root", str(root), *selection])
    client, experiment_id = connect(f"sqlite:///{root / 'mlflow.db'}", "ptexp")
    runs = select(client, experiment_id, args).runs
    return gap_by_size(task_rows(make_groups([r for r in runs if r.status == FINISHED])))


@pytest.mark.slow  # kept out of the default suite for time; `make test-slow` runs it
def test_report_plots_the_gap_to_full_against_model_size(tmp_path):
    log_scale_runs(tmp_path)
    out = tmp_path / "out"
    proc = run_report("--output-root", str(tmp_path), "--all", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and SIZE_PLOT not in proc.stderr  # nothing left out, no warning
    check_png(out / SIZE_PLOT)
    check_png(out / GAP_PLOT)

    mean = {key: statistics.fmean(values) for key, values in FINALS.items()}
    expected = {
        ("sst2", label): [(SIZES[model], 100 * (mean[(model, method)] - mean[(model, "full")])) for model in SIZES]
        for method, label in (("prefix", "prefix P=20"), ("lora", "lora"))
    }
    series = series_from_store(tmp_path, "--all")
    assert set(series) == set(expected)
    for key, points in expected.items():
        assert [size for size, _ in series[key]] == pytest.approx([size for size, _ in points])
        assert [gap for _, gap in series[key]] == pytest.approx([gap for _, gap in points])
    # the gap shrinks with size in these numbers, as the literature says it should
    assert all(abs(pts[1][1]) < abs(pts[0][1]) for pts in series.values())

    tasks = {(r["model"], r["method"]): r for r in printed_table(proc.stdout, "task")}
    assert {r["model params"] for (m, _), r in tasks.items() if m == "minilm"} == {"22.7M"}
    assert {r["model params"] for (m, _), r in tasks.items() if m == "mpnet_base"} == {"109.5M"}
    with (out / "tasks.csv").open() as f:
        rows = {(r["model"], r["method"]): r for r in csv.DictReader(f)}
    for (model, method), row in rows.items():
        assert int(row["model_params"]) == SIZES[model]
        if method != "full":
            assert float(row["gap_to_full"]) == pytest.approx(100 * (mean[(model, method)] - mean[(model, "full")]))
    page = (out / "report.html").read_text()
    assert f"{SIZE_PLOT}: Gap to full fine-tuning against model size" in page
    assert f"({SIZE_PLOT})" in (out / "report.md").read_text()

    # One model: no size plot, and the earlier one in the same folder is gone; the by-task plot stays.
    proc = run_report("--output-root", str(tmp_path), "--filter", "tags.ptexp.model = 'minilm'", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (out / SIZE_PLOT).exists() and SIZE_PLOT not in (out / "report.html").read_text()
    check_png(out / GAP_PLOT)
    one_model = series_from_store(tmp_path, "--filter", "tags.ptexp.model = 'minilm'")
    assert {len(points) for points in one_model.values()} == {1}  # a point per line: nothing to draw across sizes


def write_sst2_rte(root: Path, rows: int = 40) -> None:
    """A GLUE download in miniature: SST-2 (sentence, 0/1) and RTE (pairs, label names)."""
    rng = random.Random(0)
    words = ["good", "bad", "fine", "dull", "bright", "slow", "film", "plot", "actor", "story", "scene", "music"]

    def text() -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(3, 8)))

    for folder, header in (("SST-2", ["sentence", "label"]), ("RTE", ["index", "sentence1", "sentence2", "label"])):
        (root / folder).mkdir(parents=True)
        for split, n in (("train.tsv", rows), ("dev.tsv", rows // 2)):
            lines = ["\t".join(header)]
            for i in range(n):
                if folder == "SST-2":
                    lines.append(f"{text()}\t{rng.randint(0, 1)}")
                else:
                    label = rng.choice(["entailment", "not_entailment"])
                    lines.append("\t".join([str(i), text(), text(), label]))
            (root / folder / split).write_text("\n".join(lines) + "\n")


@pytest.mark.slow
def test_scale_study_sweep_with_minilm_and_mpnet_gets_the_size_plot(tmp_path):
    """The preset as a real sweep (one seed, one epoch of 3 steps), real MiniLM and MPNet-base, a miniature GLUE."""
    write_sst2_rte(tmp_path / "glue")
    out = tmp_path / "outputs"
    proc = run_cli(
        "-m", "experiment=scale_study", "seed=1", f"data.root={tmp_path / 'glue'}", "trainer.epochs=1",
        "trainer.batch_size=16", "data.max_length=32", "trainer.progress=false", f"output_root={out}",
        "data.selection_rows=8", timeout=1500,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    children = [r for r in runs_in(out / "mlflow.db") if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 12 and all(r.info.status == "FINISHED" for r in children)
    assert {(r.data.tags["ptexp.model"], r.data.tags["ptexp.data"]) for r in children} == {
        (m, d) for m in SIZES for d in ("sst2", "glue_rte")
    }
    assert all(r.data.params["data.selection_rows"] == "8" for r in children)

    proc = run_report("--output-root", str(out), "--latest-sweep", "--no-attach", "--out", str(tmp_path / "report"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_png(tmp_path / "report" / SIZE_PLOT)
    series = series_from_store(out, "--latest-sweep")
    assert set(series) == {(d, m) for d in ("sst2", "glue_rte") for m in ("prefix P=20", "lora")}
    for points in series.values():
        (small, _), (large, _) = points
        assert small == pytest.approx(SIZES["minilm"], rel=0.01) and large == pytest.approx(
            SIZES["mpnet_base"], rel=0.01
        )

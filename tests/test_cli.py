"""The real command line, driven through subprocess: single runs, sweeps, SST-2 files (bad input: test_bad_input.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SST2_DIR, TINY, run_cli, runs_in


def test_prefix_command_exactly_as_typed_logs_a_finished_run_matching_the_formula(tmp_path):
    proc = run_cli("method=prefix", "prefix_length=5", "trainer.progress=false", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[ptexp] done: eval accuracy" in proc.stdout
    assert "mlflow ui --backend-store-uri sqlite:///" in proc.stdout
    (run,) = runs_in(tmp_path / "outputs" / "mlflow.db")
    assert run.info.status == "FINISHED"
    layers, hidden, labels = 6, 384, 2  # all-MiniLM-L6-v2
    assert run.data.metrics["params/trainable"] == layers * 2 * 5 * hidden + hidden * labels + labels
    assert run.data.params["prefix_length"] == "5"
    assert 0.0 <= run.data.metrics["eval/accuracy"] <= 1.0


def test_multirun_logs_one_parent_with_two_finished_children(tmp_path):
    proc = run_cli("-m", "method=full,prefix", *TINY, f"output_root={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = runs_in(tmp_path / "mlflow.db")
    parents = [r for r in runs if r.data.tags.get("ptexp.sweep") == "parent"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(r.data.tags["ptexp.method"] for r in children) == ["full", "prefix"]
    assert all(r.info.status == "FINISHED" for r in children)
    assert all(parents[0].info.start_time <= r.info.start_time for r in children)
    assert len(runs) == 3
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for child in children:
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"config.yaml", "overrides.yaml", "metrics.jsonl"} <= artifacts
        overrides = client.download_artifacts(child.info.run_id, "overrides.yaml", str(tmp_path / child.info.run_id))
        assert f"method={child.data.tags['ptexp.method']}" in Path(overrides).read_text()


@pytest.mark.slow  # kept out of the default suite for time; `make test-slow` runs it
@pytest.mark.skipif(not SST2_DIR.exists(), reason="../shared/data/sst2 not present")
def test_sst2_from_local_glue_files_evaluates_on_all_872_dev_rows(tmp_path):
    proc = run_cli(
        "data=sst2",
        f"data.data_dir={SST2_DIR}",
        "data.max_train_samples=2000",
        "model=tiny",
        "trainer.epochs=1",
        "trainer.progress=false",
        f"output_root={tmp_path}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2000 train / 872 eval rows" in proc.stdout
    (run,) = runs_in(tmp_path / "mlflow.db")
    assert run.info.status == "FINISHED"
    assert run.data.metrics["data/eval_rows"] == 872 and run.data.metrics["data/train_rows"] == 2000
    assert run.data.tags["ptexp.train_origin"].endswith("sst2/train.tsv")


def test_help_introduces_ptexp_and_points_to_the_readme():
    proc = run_cli("--help", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    intro = proc.stdout.split("== Configuration groups ==")[0]
    assert intro.startswith("ptexp: full fine-tuning") and "powered by Hydra" not in intro
    assert "python -m ptexp -m method=full,prefix" in intro and "README.md" in intro
    assert "method: adalora, bitfit, full, ia3" in proc.stdout  # Hydra's list of groups follows

"""Adapters: only what trained is saved, its size is logged, and ptexp.evaluate reproduces the run exactly; the
run's predictions artifact gives its logged metrics back exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from ptexp.errors import UserError
from ptexp.evaluate import evaluate_adapter
from ptexp.metrics import METRICS
from ptexp.predictions import read_predictions
from tests.conftest import TINY, run_cli, runs_in


def train_tiny(tmp_path, *overrides: str):
    proc = run_cli(*TINY, "trainer.epochs=2", f"output_root={tmp_path}", *overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (adapter,) = (tmp_path / "runs").glob("*/*/adapter")
    (run,) = runs_in(tmp_path / "mlflow.db")
    return adapter, run


def assert_predictions_give_the_logged_metrics(tmp_path, run) -> list[str]:
    """The run's predictions artifact: every logged ``eval/<metric>`` recomputed from it is the logged value,
    exactly; returns the file's lines."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert {a.path for a in client.list_artifacts(run.info.run_id, "predictions")} == {"predictions/eval.jsonl"}
    path = Path(client.download_artifacts(run.info.run_id, "predictions/eval.jsonl", str(tmp_path)))
    saved = read_predictions(path)
    names = [n for n in METRICS if f"eval/{n}" in run.data.metrics]
    assert len(names) >= 2 and len(saved.labels) == run.data.metrics["data/eval_rows"]
    assert saved.metrics(names) == {n: run.data.metrics[f"eval/{n}"] for n in names}
    return path.read_text().splitlines()


@pytest.mark.parametrize(
    "overrides,expected_names",
    [
        (
            ["method=prefix", "prefix_length=4", "prefix.projection=true", "prefix.projection_hidden=16"],
            {"prefix_encoder.prefix", "classifier.head.weight", "classifier.head.bias"},
        ),
        pytest.param(["method=lora"], None, marks=pytest.mark.slow),
        pytest.param(["method=full"], None, marks=pytest.mark.slow),
    ],
)
def test_adapter_holds_what_trained_and_evaluate_reproduces_the_run(tmp_path, overrides, expected_names):
    adapter, run = train_tiny(tmp_path, *overrides)
    meta = json.loads((adapter / "adapter.json").read_text())
    tensors = load_file(str(adapter / "adapter.safetensors"))
    if expected_names is not None:
        assert set(tensors) == expected_names
        assert tensors["prefix_encoder.prefix"].shape == (2, 2, 4, 32)  # collapsed: layers, k/v, P, hidden
        assert meta["rebuild"] == {"prefix.projection": False}  # ptexp.evaluate rebuilds without the MLP
    assert sum(t.numel() for t in tensors.values()) == meta["trained_parameters"]
    if meta["method"] != "prefix":  # a collapsed prefix stores fewer numbers than its MLP has parameters
        assert meta["trained_parameters"] == run.data.metrics["params/trainable"]
    size = (adapter / "adapter.safetensors").stat().st_size + (adapter / "adapter.json").stat().st_size
    assert run.data.metrics["adapter/bytes"] == size
    metrics = run.data.metrics  # the inference timing, LoRA's merged too, ran before the adapter was saved
    assert metrics["infer/batch_size"] == 32 and metrics["infer/ms_per_example"] > 0
    assert ("infer/merged_ms_per_example" in metrics) == (meta["method"] == "lora")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    names = {a.path for a in client.list_artifacts(run.info.run_id, "adapter")}
    assert names == {"adapter/adapter.json", "adapter/adapter.safetensors"}

    lines = assert_predictions_give_the_logged_metrics(tmp_path, run)
    again = evaluate_adapter(adapter, [])
    assert again["eval/accuracy"] == run.data.metrics["eval/accuracy"] == meta["eval"]["eval/accuracy"]
    assert again["eval/loss"] == meta["eval"]["eval/loss"]  # bit-for-bit the same logits
    # beside the run's own predictions, the same rows
    assert again["predictions"] == str(adapter.parent / "predictions" / "evaluate_embedded.jsonl")
    assert Path(again["predictions"]).read_text().splitlines() == lines


@pytest.mark.slow  # kept out of the default suite for time; `make test-slow` runs it
def test_evaluate_cli_on_other_data_and_refusing_another_base_model(tmp_path):
    adapter, _ = train_tiny(tmp_path, "method=prefix", "prefix_length=3")
    data = tmp_path / "mine.jsonl"
    data.write_text('{"sentence": "wonderful", "label": 1}\n{"sentence": "awful", "label": 0}\n')

    def evaluate_cli(*args):
        return run_cli(*args, timeout=300, module="ptexp.evaluate")

    ok = evaluate_cli(str(adapter), "data=files", f"data.train_file={data}", f"data.eval_file={data}")
    assert ok.returncode == 0, ok.stderr
    assert "(2 rows)" in ok.stdout
    bad = evaluate_cli(str(adapter), "model.config_overrides.intermediate_size=128")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "the adapter was trained on tiny" in bad.stderr and "other weights" in bad.stderr
    missing = evaluate_cli(str(tmp_path))
    assert missing.returncode == 2 and "holds no adapter.json" in missing.stderr
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(UserError, match=r"^--predictions: cannot write .*; valid: a file that can be written$"):
        evaluate_adapter(adapter, [], blocker / "preds.jsonl")


@pytest.mark.slow  # kept out of the default suite for time; `make test-slow` runs it
@pytest.mark.parametrize("task,method,primary", [("glue_rte", "prefix", "accuracy"), ("glue_stsb", "lora", "pearson")])
def test_evaluate_reproduces_a_pair_task_and_a_regression_task_from_the_adapter(tmp_path, task, method, primary):
    from tests.test_task_runs import write_glue_root

    write_glue_root(tmp_path / "glue")
    adapter, run = train_tiny(tmp_path, f"data={task}", f"data.root={tmp_path / 'glue'}", f"method={method}")
    meta = json.loads((adapter / "adapter.json").read_text())
    assert meta["primary_metric"] == primary
    assert meta["task"] == ("regression" if task == "glue_stsb" else "classification")
    again = evaluate_adapter(adapter, [])
    assert again["primary"] == primary
    assert again[f"eval/{primary}"] == run.data.metrics[f"eval/{primary}"] == meta["eval"][f"eval/{primary}"]
    assert again["eval/loss"] == meta["eval"]["eval/loss"]  # bit-for-bit the same logits, token types included
    lines = assert_predictions_give_the_logged_metrics(tmp_path, run)
    assert ('"score"' in lines[0]) == (task == "glue_stsb")
    chosen = tmp_path / "mine" / "preds.jsonl"
    proc = run_cli(str(adapter), "--predictions", str(chosen), module="ptexp.evaluate")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith(f"eval {primary} {again[f'eval/{primary}']:.4f} (primary)")
    assert f"predictions: {chosen}" in proc.stdout and chosen.read_text().splitlines() == lines

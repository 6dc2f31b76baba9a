"""The common trainer on the tiny model, in-process: tracking, determinism, what trains, divergence."""

from __future__ import annotations

import json

import pytest
import torch

from ptexp.errors import TrainingDiverged
from ptexp.trainer import run_experiment
from tests.conftest import runs_in


def test_prefix_run_is_tracked_with_params_tags_counts_and_metric_history(tiny_config, tmp_path):
    cfg = tiny_config("method=prefix", "prefix_length=5", "trainer.log_every=1", "trainer.eval_every=1")
    result = run_experiment(cfg, tmp_path / "run")
    (run,) = runs_in(tmp_path / "outputs" / "mlflow.db")
    assert run.info.status == "FINISHED"
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    assert params["prefix_length"] == "5" and params["method.name"] == "prefix"
    assert params["optimizer.lr"] == "0.02" and params["model.name"] == "tiny"
    assert tags["ptexp.method"] == "prefix" and tags["ptexp.model"] == "tiny" and tags["ptexp.data"] == "embedded"
    assert tags["version.torch"] == torch.__version__ and "version.transformers" in tags
    layers, hidden = cfg.model.config_overrides.num_hidden_layers, cfg.model.config_overrides.hidden_size
    assert metrics["params/trainable"] == layers * 2 * 5 * hidden + hidden * 2 + 2
    assert metrics["params/trainable_pct"] == pytest.approx(100 * metrics["params/trainable"] / metrics["params/total"])
    assert metrics["eval/accuracy"] == pytest.approx(result["eval/accuracy"])
    for key in (
        "eval/loss",
        "eval/macro_f1",
        "time/train_s",
        "throughput/train_samples_per_s",
        "memory/peak_mb",
    ):
        assert key in metrics, key
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    steps = 64 // cfg.trainer.batch_size
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == list(range(1, steps + 1))
    assert len(client.get_metric_history(run.info.run_id, "eval/accuracy")) == steps
    local = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert sum("train/loss" in row for row in local) == steps
    assert "metrics.jsonl" in [a.path for a in client.list_artifacts(run.info.run_id)]
    assert len(list((tmp_path / "outputs" / "cache" / "tokens").glob("*.json"))) == 2  # train + eval token ids


def test_fractional_epochs_and_the_methods_own_epochs(tiny_config, tmp_path, capsys):
    """1.5 epochs of 4 steps train 6 steps, evaluated at the first epoch's end and at the last step; a method listed
    in trainer.method_epochs trains that many epochs instead (with a note), and its params record them."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    for name, overrides in {
        "fractional": ["trainer.epochs=1.5"],
        "listed": ["trainer.epochs=1", "+trainer.method_epochs.prefix=2.5", "+trainer.method_epochs.full=9"],
    }.items():
        cfg = tiny_config("method=prefix", "trainer.batch_size=16", "trainer.log_every=1", *overrides)
        run_experiment(cfg, tmp_path / name)
        noted = "trainer.method_epochs.prefix=2.5 replaces trainer.epochs=1" in capsys.readouterr().err
        assert noted == (name == "listed")
    fractional, listed = sorted(runs_in(tmp_path / "outputs" / "mlflow.db"), key=lambda r: r.info.start_time)
    for run, epochs, evaluations in ((fractional, "1.5", [4, 6]), (listed, "2.5", [4, 8, 10])):
        assert run.data.params["trainer.epochs"] == epochs
        history = client.get_metric_history(run.info.run_id, "eval/accuracy")
        assert sorted(m.step for m in history) == evaluations
        assert len(client.get_metric_history(run.info.run_id, "train/loss")) == evaluations[-1]


@pytest.mark.parametrize("method", ["full", pytest.param("prefix", marks=pytest.mark.slow)])  # prefix: time
def test_same_seed_gives_the_same_metrics_and_another_seed_does_not(tiny_config, tmp_path, method):
    def losses(seed: int, name: str) -> list[float]:
        cfg = tiny_config(f"method={method}", f"seed={seed}", "tracking.enabled=false", "trainer.log_every=1")
        run_experiment(cfg, tmp_path / name)
        rows = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        return [
            r.get("train/loss", r.get("eval/loss"))
            for r in map(json.loads, rows)
            if "train/loss" in r or "eval/loss" in r
        ]

    first, again, other = losses(1, "a"), losses(1, "b"), losses(2, "c")
    assert first == again
    assert first != other


def test_diverging_loss_stops_the_run_and_marks_it_failed(tiny_config, tmp_path):
    cfg = tiny_config("optimizer.lr=1e12", "trainer.grad_clip=null", "optimizer.warmup_ratio=0")
    with pytest.raises(TrainingDiverged, match="loss became"):
        run_experiment(cfg, tmp_path / "run")
    (run,) = runs_in(tmp_path / "outputs" / "mlflow.db")
    assert run.info.status == "FAILED"
    assert "TrainingDiverged" in run.data.tags["ptexp.error"]

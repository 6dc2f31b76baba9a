"""The cross-task benchmark (benchmarks/tasks.py) and its peer (hf_peer.py) on the real GLUE files in
../shared/data: the peer's Trainer runs the recipe of ptexp's composed config (its per-task tables resolved) on
ptexp's token ids, refuses what it cannot run in one line, and logs a run that the report reads (ptexp's metrics and
the predictions artifact); (slow) one tiny invocation runs the study (python -m ptexp.study) and the peers end to
end, writes its tables and recipes, and a second invocation finds every run done in MLflow and trains nothing. The
protocol's own tests (the budget, the fill epochs): tests/test_study.py. peer_speed.py: tests/test_peer_speed.py."""

from __future__ import annotations

import contextlib
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ptexp.data import encode, load_dataset
from ptexp.encoding import planned_steps
from ptexp.models import load_tokenizer
from ptexp.predictions import read_predictions
from tests.conftest import ROOT, runs_in

GLUE_DIR = ROOT.parent / "shared" / "data" / "glue"
sys.path.insert(0, str(ROOT / "benchmarks"))
pytestmark = pytest.mark.skipif(not GLUE_DIR.exists(), reason="../shared/data/glue not present")
RTE = ["model=tiny", "data=glue_rte", f"data.data_dir={GLUE_DIR / 'RTE'}"]


def test_the_peers_trainer_runs_the_composed_recipe_on_ptexps_tokens(tmp_path):
    from hf_peer import encoded_splits, peer_config, training_arguments

    cfg = peer_config([*RTE, "data.max_train_samples=100", "data.selection_rows=50", "optimizer.lr=1e-4",
                       "+optimizer.task_lr.glue_rte.full=3e-4", "+trainer.task_epochs.glue_rte.full=2.5",
                       "optimizer.weight_decay=0.05", "optimizer.warmup_ratio=0.1", "optimizer.schedule=constant",
                       "optimizer.betas=[0.8,0.99]", "optimizer.eps=1e-7", "trainer.batch_size=16",
                       "trainer.grad_clip=0.5", "trainer.select_best=true", "data.max_length=40", "seed=7",
                       f"output_root={tmp_path}"])  # fmt: skip
    args = training_arguments(cfg, 100, tmp_path, torch.device("cpu"))
    steps = math.ceil(7 * 2.5)  # 100 rows in batches of 16, 2.5 epochs (the task's table, over trainer.epochs)
    assert args.max_steps == steps == planned_steps(100, cfg.trainer)
    assert args.learning_rate == 3e-4  # optimizer.task_lr, over optimizer.lr, as ptexp's trainer resolves it
    assert args.warmup_steps == math.ceil(0.1 * steps)  # ptexp.optim's count
    assert (args.weight_decay, args.adam_beta1, args.adam_beta2, args.adam_epsilon) == (0.05, 0.8, 0.99, 1e-7)
    assert args.lr_scheduler_type.value == "constant_with_warmup" and args.optim.value == "adamw_torch_fused"
    assert (args.per_device_train_batch_size, args.per_device_eval_batch_size) == (16, cfg.trainer.eval_batch_size)
    assert (args.max_grad_norm, args.seed, args.train_sampling_strategy) == (0.5, 7, "group_by_length")
    assert args.load_best_model_at_end and args.metric_for_best_model == "accuracy" and args.greater_is_better
    data, tokenizer = load_dataset(cfg.data), load_tokenizer(cfg.model)
    encoded = encoded_splits(cfg, data, tokenizer)
    assert {name: len(split) for name, split in encoded.items()} == {"train": 100, "eval": 277, "selection": 50}
    assert encoded["train"].input_ids == encode(data.train, tokenizer, 40).input_ids  # ptexp's own token ids
    assert max(len(ids) for ids in encoded["train"].input_ids) == 40  # truncated at data.max_length
    plain = peer_config([*RTE, "trainer.group_by_length=false", "trainer.grad_clip=null", "optimizer.lr=2e-5"])
    args = training_arguments(plain, 100, tmp_path, torch.device("cpu"))
    assert (args.train_sampling_strategy, args.max_grad_norm, args.learning_rate) == ("random", 0.0, 2e-5)
    assert not args.load_best_model_at_end and args.eval_strategy.value == "no"


@pytest.mark.parametrize(
    ("overrides", "starts"),
    [
        (["method=prefix"], "error: method: prefix"),
        (["optimizer=sgd"], "error: optimizer: sgd"),
        (["model=minilm"], "error: model.pooling: mean"),  # minilm's preset pools by the mean
        (["trainer.resume=true"], "error: trainer.resume"),
        (["trainer.nope=1"], "error: trainer.nope: no such key"),
        (["data.max_train_samples=0"], "error: data.max_train_samples"),  # ptexp's own checks
        (["--label", "Bad label"], "error: --label"),
    ],
)
def test_a_key_the_peer_cannot_run_is_one_error_line(tmp_path, overrides, starts):
    from hf_peer import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main([*RTE, f"output_root={tmp_path}", *overrides])
        except SystemExit as stop:  # ptexp's early argument checks exit themselves
            code = stop.code
    lines = err.getvalue().strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(starts) and "; valid: " in lines[0], lines
    assert not any(tmp_path.iterdir())  # nothing left behind


@pytest.mark.slow  # 20-27 s: a subprocess that loads transformers' Trainer (the default suite is near 10 min)
def test_the_peer_logs_ptexps_metrics_and_predictions(tmp_path):
    cmd = [sys.executable, "benchmarks/hf_peer.py", "--label", "hf_trainer_grouped", *RTE,
           "data.max_train_samples=16", "data.max_eval_samples=16", "data.selection_rows=8", "trainer.batch_size=8",
           "trainer.max_steps=2", "trainer.select_best=true", "trainer.progress=false", f"output_root={tmp_path}",
           "tracking.experiment=peer", "+tracking.tags.check=yes"]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("[hf_peer] hf_trainer_grouped glue_rte seed 42: eval/loss")
    (run,) = runs_in(tmp_path / "mlflow.db", "peer")
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    assert run.info.status == "FINISHED" and tags["ptexp.method"] == "hf_trainer_grouped" and tags["check"] == "yes"
    assert tags["ptexp.peer"] == "hf_trainer" and params["method.name"] == "full" and params["seed"] == "42"
    assert (params["peer.max_steps"], params["peer.sampler"], params["peer.warmup_steps"]) == ("2", "group_by_length",
                                                                                              "1")  # fmt: skip
    assert {k for k in metrics if k.startswith("eval/")} == {"eval/loss", "eval/accuracy", "eval/macro_f1"}
    assert metrics["train/steps"] == 2 and 0 < metrics["time/train_s"] < metrics["time/train_wall_s"]
    parts = metrics["time/train_s"] + metrics["time/eval_s"] + metrics["time/save_s"]  # the selection evaluations
    assert parts == pytest.approx(metrics["time/train_wall_s"]) and metrics["time/save_s"] > 0  # and the best's save
    assert "selection/best_accuracy" in metrics and metrics["data/selection_rows"] == 8
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    predictions = read_predictions(Path(client.download_artifacts(run.info.run_id, "predictions/eval.jsonl", tmp_path)))
    assert len(predictions.labels) == 16
    assert predictions.metrics(["accuracy", "macro_f1"]) == pytest.approx(
        {"accuracy": metrics["eval/accuracy"], "macro_f1": metrics["eval/macro_f1"]}
    )


def run_benchmark(out, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "benchmarks/tasks.py", "--quick", "--tasks", "rte", "--train-rows", "48",
           "--selection-rows", "24", "--max-steps", "2", "--output-root", str(out), *extra]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)  # 1,021 s at load 13 on 2 cores


@pytest.mark.slow
def test_one_invocation_chooses_runs_reports_and_resumes(tmp_path):
    first = run_benchmark(tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    table = (tmp_path / "tasks-quick.md").read_text()
    peers = [f"{name} ({recipe}), lr {lr}, 2 steps" for name in ("hf_trainer", "hf_trainer_grouped")
             for recipe, lr in (("full's recipe", "0.0002"), ("run_glue default", "2e-05"))]  # fmt: skip
    for row in ("**full, lr 0.0002, 2 steps** (chosen)", "**prefix P=20, lr 0.02, 2 steps** (chosen)", *peers):
        assert row in table, table
    assert table.count("PASS") + table.count("MISS") == 4
    assert "tasks-quick_time_score.png" in table and (tmp_path / "tasks-quick_time_score.png").stat().st_size > 10_000
    recipes = json.loads((tmp_path / "tasks-quick_recipes.json").read_text())
    assert {m: recipes["rte"][m]["lr"] for m in ("full", "prefix", "lora")} == {"full": 2e-4, "prefix": 2e-2,
                                                                                "lora": 2e-3}  # fmt: skip
    again = run_benchmark(tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "$ python -m ptexp -m" not in again.stdout and "$ hf_peer.py" not in again.stdout  # nothing trained
    assert (tmp_path / "tasks-quick.md").read_text() == table


def test_time_ratios_pair_each_seed_with_the_same_seed():
    from tasks_report import time_ratio

    # seed 1 timed on a fast day, seeds 2 and 3 on a slow one: each seed's ratio is 0.5, the ratio of means is not
    full = {"seconds": {1: 30.0, 2: 40.0, 3: 40.0}, "train_s": 110 / 3}
    peer = {"seconds": {1: 60.0, 2: 80.0, 3: 80.0}, "train_s": 220 / 3}
    grid_point = {"seconds": {1: 15.0}, "train_s": 15.0}
    assert time_ratio(full, peer) == pytest.approx(0.5)
    assert time_ratio(grid_point, full) == pytest.approx(0.5)  # paired with full's seed 1 only
    assert time_ratio({"seconds": {4: 10.0}, "train_s": 10.0}, full) == pytest.approx(10 / (110 / 3))  # no common seed


def test_targets_pass_on_the_gap_intervals_lower_end_not_on_the_point_gap():
    from tasks_report import targets

    from ptexp.report.intervals import BOTH, Interval

    def row(method: str, mean: float, seconds: float) -> dict:
        return {"method": method, "mean": mean, "seeds": 3, "seconds": {1: seconds}, "train_s": seconds, "last": 0}

    table = {m: row(m, 0.79, 6.0) for m in ("prefix", "lora")}
    table |= {"full": row("full", 0.80, 10.0)} | {p: row(p, 0.78, 20.0) for p in ("hf_trainer", "hf_trainer_grouped")}
    given = {  # row minus base, in points: every point gap meets its target, not every interval
        "prefix": Interval(-4.0, 2.0, BOTH),  # -1.0 behind (within 2.0), but the interval reaches -4.0
        "lora": Interval(-1.4, -0.6, BOTH),  # its lower end within 1.5
        "hf_trainer": Interval(0.5, 3.5, BOTH),  # full - peer: above 0
        "hf_trainer_grouped": Interval(-0.5, 4.5, BOTH),  # contains 0: not shown to be >= the peer
    }

    def interval(r: dict, base: dict):
        return given[base["method"] if r is table["full"] else r["method"]], BOTH

    found = targets(table, "accuracy", {}, interval)
    assert [ok for ok, _ in found] == [True, False, True, False], found  # Trainer, grouped, LoRA, prefix
    assert found[2][1].startswith("lora") and found[3][1].startswith("prefix"), found
    assert "95% interval [-4.0, +2.0] (seeds + dev examples)" in found[3][1]
    nothing = targets(table, "accuracy", {}, lambda r, base: (None, "none: no predictions artifact and a single seed"))
    assert not any(ok for ok, _ in nothing)

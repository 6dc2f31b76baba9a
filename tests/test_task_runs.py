"""Tasks through the whole run: the task's metrics and primary metric in MLflow, honest selection (the selection
split, trainer.select_best restoring the best step), and experiment=glue_compare as a real sweep."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from ptexp.trainer import run_experiment
from tests.conftest import CONF_DIR, run_cli, runs_in

WORDS = [
    "good",
    "bad",
    "fine",
    "dull",
    "bright",
    "long",
    "short",
    "film",
    "plot",
    "actor",
    "story",
    "scene",
    "music",
    "slow",
    "fast",
    "warm",
    "cold",
]


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))


def write_glue_root(root, rows: int = 48) -> None:
    """A GLUE download's layout in miniature: RTE (pairs, label names) and STS-B (pairs, float scores)."""
    rng = random.Random(0)
    for folder, header, label in (
        ("RTE", ["index", "sentence1", "sentence2", "label"], lambda: rng.choice(["entailment", "not_entailment"])),
        ("STS-B", ["index", "genre", "sentence1", "sentence2", "score"], lambda: f"{rng.uniform(0, 5):.3f}"),
    ):
        (root / folder).mkdir(parents=True)
        for split, n in (("train.tsv", rows), ("dev.tsv", rows // 2)):
            lines = ["\t".join(header)]
            for i in range(n):
                extra = ["main"] if folder == "STS-B" else []
                lines.append("\t".join([str(i), *extra, sentence(rng), sentence(rng), label()]))
            (root / folder / split).write_text("\n".join(lines) + "\n")


def history(store, run_id: str, key: str) -> dict[int, float]:
    client = MlflowClient(f"sqlite:///{store}")
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


def test_select_best_restores_the_best_selection_step_before_the_final_eval(tiny_config, tmp_path):
    """Evaluation is deterministic, so restoring step k's trainable tensors must give step k's eval numbers."""
    write_glue_root(tmp_path / "glue", rows=96)
    cfg = tiny_config(
        "data=glue_stsb", f"data.root={tmp_path / 'glue'}", "data.selection_rows=24", "trainer.select_best=true",
        "method=prefix", "prefix_length=4", "trainer.epochs=4", "trainer.batch_size=8", "optimizer.lr=0.05",
        "data.max_train_samples=null", "data.max_eval_samples=null", "data.max_length=32",
    )  # fmt: skip
    result = run_experiment(cfg, tmp_path / "run")
    store = tmp_path / "outputs" / "mlflow.db"
    (run,) = runs_in(store)
    assert run.data.tags["ptexp.primary_metric"] == "pearson" and run.data.tags["ptexp.task"] == "regression"
    assert run.data.metrics["data/train_rows"] == 72 and run.data.metrics["data/selection_rows"] == 24
    selection = history(store, run.info.run_id, "selection/pearson")
    assert sorted(selection) == [9, 18, 27, 36]  # each epoch end and the final step
    best_step = max(selection, key=lambda step: selection[step])
    assert result["selection/best_step"] == best_step
    assert result["selection/best_pearson"] == selection[best_step]
    evals = history(store, run.info.run_id, "eval/pearson")
    final_step = max(evals)
    assert result["eval/pearson"] == evals[final_step]
    assert best_step != final_step  # with this seed the best selection score comes early, so a restore happens
    assert result["eval/pearson"] == evals[best_step]  # the final numbers are the restored step's
    assert result["eval/loss"] == history(store, run.info.run_id, "eval/loss")[best_step]
    for key in ("eval/spearman", "eval/mse", "eval/best_pearson", "selection/spearman"):
        assert key in result, key


def test_without_eval_history_the_dev_split_is_scored_once_and_the_final_numbers_are_the_same(tiny_config, tmp_path):
    """trainer.eval_history=false (a study's jobs): the selection split still picks the step at each epoch end, the
    eval split is scored only at the end, and the final eval numbers equal those of the run that scored it each time."""
    write_glue_root(tmp_path / "glue", rows=96)
    args = ["data=glue_stsb", f"data.root={tmp_path / 'glue'}", "data.selection_rows=24", "trainer.select_best=true",
            "method=prefix", "prefix_length=4", "trainer.epochs=4", "trainer.batch_size=8", "optimizer.lr=0.05",
            "data.max_train_samples=null", "data.max_eval_samples=null", "data.max_length=32"]  # fmt: skip
    results, runs = {}, {}
    for scored in (True, False):
        cfg = tiny_config(*args, f"trainer.eval_history={str(scored).lower()}", f"tracking.run_name=h{scored}")
        results[scored] = run_experiment(cfg, tmp_path / f"run_{scored}")
    store = tmp_path / "outputs" / "mlflow.db"
    for run in runs_in(store):
        runs[run.data.tags["mlflow.runName"]] = run.info.run_id
    assert sorted(history(store, runs["hFalse"], "selection/pearson")) == [9, 18, 27, 36]
    assert sorted(history(store, runs["hFalse"], "eval/pearson")) == [36]  # the final evaluation only
    assert sorted(history(store, runs["hTrue"], "eval/pearson")) == [9, 18, 27, 36]
    assert results[False]["selection/best_step"] == results[True]["selection/best_step"] != 36  # a restore happened
    for key in ("eval/pearson", "eval/loss", "eval/spearman", "selection/best_pearson"):
        assert results[False][key] == results[True][key], key


def test_without_a_selection_split_nothing_is_selected(tiny_config, tmp_path):
    result = run_experiment(tiny_config("trainer.eval_every=1"), tmp_path / "run")
    assert not any(key.startswith("selection/") for key in result)
    assert result["eval/best_accuracy"] >= result["eval/accuracy"]  # the optimistic maximum over the eval history


@pytest.mark.parametrize("task", ["glue_rte", "glue_stsb"])
def test_data_root_reads_the_tasks_folder(tiny_config, tmp_path, task):
    write_glue_root(tmp_path / "glue")
    cfg = tiny_config(f"data={task}", f"data.root={tmp_path / 'glue'}", "trainer.max_steps=1")
    run_experiment(cfg, tmp_path / "run")
    folder = {"glue_rte": "RTE", "glue_stsb": "STS-B"}[task]
    (run,) = runs_in(tmp_path / "outputs" / "mlflow.db")
    assert run.data.tags["ptexp.train_origin"] == str((tmp_path / "glue" / folder / "train.tsv").resolve())


@pytest.mark.slow  # kept out of the default suite for time; `make test-slow` runs it
def test_glue_compare_sweeps_tasks_and_methods_with_their_primary_metrics(tmp_path):
    write_glue_root(tmp_path / "glue")
    out = tmp_path / "outputs"
    proc = run_cli(
        "-m", "experiment=glue_compare", "model=tiny", f"data.root={tmp_path / 'glue'}", "data=glue_rte,glue_stsb",
        "method=full,prefix", "seed=1", "trainer.epochs=2", "trainer.progress=false", "data.max_length=32",
        "data.selection_rows=5", f"output_root={out}",
    )  # fmt: skip
    preset = OmegaConf.load(Path(CONF_DIR) / "experiment" / "glue_compare.yaml")
    task_lr, task_epochs = preset.optimizer.task_lr, preset.trainer.task_epochs
    assert proc.returncode == 0, proc.stderr[-3000:]
    children = [r for r in runs_in(out / "mlflow.db") if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    for run in children:
        tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
        primary = {"glue_rte": "accuracy", "glue_stsb": "pearson"}[tags["ptexp.data"]]
        assert tags["ptexp.primary_metric"] == primary
        assert f"eval/{primary}" in metrics and f"selection/best_{primary}" in metrics
        assert params["trainer.select_best"] == "True" and params["data.max_train_samples"] == "1000"
        assert metrics["data/selection_rows"] == 5 and metrics["data/train_rows"] == 43  # all 48 but the 5
        assert float(params["optimizer.lr"]) == float(task_lr[tags["ptexp.data"]][tags["ptexp.method"]])
        epochs = task_epochs.get(tags["ptexp.data"], {}).get(tags["ptexp.method"], 2)  # else the command line's 2
        assert float(params["trainer.epochs"]) == epochs

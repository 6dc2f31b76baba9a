"""Per-example predictions: the final evaluation keeps every eval split's outputs (extra splits included, the
selection split not), writes them as JSON lines that give the metrics back exactly."""

from __future__ import annotations

import numpy as np
import pytest

from ptexp.config import Task
from ptexp.evaluation import EvalSets, Evaluator, SplitOutputs, TaskSpec
from ptexp.loop import LoopState
from ptexp.predictions import read_predictions, save_predictions
from ptexp.tracking import NullTracker


def outputs_for(rows: int, seed: int) -> SplitOutputs:
    rng = np.random.default_rng(seed)
    return SplitOutputs(rng.normal(size=(rows, 2)).astype(np.float32), rng.integers(0, 2, rows).tolist(), 1.0)


def test_the_final_evaluation_keeps_each_eval_splits_outputs_and_they_give_the_metrics_back(tmp_path):
    splits = {"eval": outputs_for(30, 0), "eval_mismatched": outputs_for(20, 1), "selection": outputs_for(10, 2)}
    names = {"e": "eval", "m": "eval_mismatched", "s": "selection"}  # stand-ins for the encoded splits
    sets = EvalSets(eval="e", extras={"mismatched": "m"}, selection="s")
    evaluator = Evaluator(None, sets, TaskSpec(), lambda split: splits[names[split]], select_best=False)
    state = LoopState()
    evaluator.at_step(1, state)
    assert evaluator.kept == {}  # an evaluation during training keeps nothing
    metrics = evaluator.at_step(2, state, final=True)
    assert set(evaluator.kept) == {"eval", "eval_mismatched"}
    save_predictions(evaluator.kept, Task.classification, tmp_path, NullTracker(tmp_path))
    assert sorted(p.name for p in (tmp_path / "predictions").iterdir()) == ["eval.jsonl", "eval_mismatched.jsonl"]
    for prefix in ("eval", "eval_mismatched"):
        saved = read_predictions(tmp_path / "predictions" / f"{prefix}.jsonl")
        assert saved.metrics(["accuracy", "macro_f1"]) == {
            "accuracy": metrics[f"{prefix}/accuracy"],
            "macro_f1": metrics[f"{prefix}/macro_f1"],
        }


def test_regression_predictions_are_scores_and_a_foreign_file_is_refused(tmp_path):
    outputs = SplitOutputs(np.array([[0.5], [1.25], [3.0]], dtype=np.float32), [0.4, 1.0, 3.5], 0.2)
    save_predictions({"eval": outputs}, Task.regression, tmp_path, NullTracker(tmp_path))
    saved = read_predictions(tmp_path / "predictions" / "eval.jsonl")
    assert saved.task == Task.regression and saved.predictions == [0.5, 1.25, 3.0] and saved.labels == [0.4, 1.0, 3.5]
    (tmp_path / "other.jsonl").write_text('{"step": 1, "eval/loss": 0.3}\n')
    with pytest.raises(ValueError, match="not a predictions file"):
        read_predictions(tmp_path / "other.jsonl")

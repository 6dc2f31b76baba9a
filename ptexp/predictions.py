"""Per-example predictions: what a final evaluation predicted for every row of an eval split, as JSON lines.

A run writes ``predictions/<prefix>.jsonl`` in its folder for each eval split it scores (``eval``, ``eval_NAME``)
and logs it as an artifact under ``predictions/``. One line per row of the split as loaded, in that order:
``{"id": row index, "label": ..., "prediction": class index, "logits": [...]}`` for classification,
``{"id": row index, "label": ..., "score": ...}`` for regression. :func:`read_predictions` reads it back, and
:func:`ptexp.metrics.compute` on its predictions and labels gives the logged ``<prefix>/<metric>`` exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ptexp.config import Task

if TYPE_CHECKING:  # the report reads predictions without importing torch
    from ptexp.evaluation import SplitOutputs

FOLDER = "predictions"  # in the run folder, and the artifact path


@dataclass(frozen=True)
class Predictions:
    """A split's predictions (class indices or scores) and labels, row ``i`` of each its row ``i``."""

    task: Task
    predictions: list
    labels: list

    def metrics(self, names: list[str] | tuple[str, ...]) -> dict[str, float]:
        """:func:`ptexp.metrics.compute` on these predictions and labels."""
        from ptexp.metrics import compute

        return compute(names, self.predictions, self.labels)


def prediction_lines(outputs: SplitOutputs, task: Task) -> list[str]:
    """One JSON line per row (see the module)."""
    lines, values = [], outputs.predictions(task)
    for i, (label, value, logits) in enumerate(zip(outputs.labels, values, outputs.logits, strict=True)):
        if task == Task.regression:
            row = {"id": i, "label": label, "score": value}
        else:
            row = {"id": i, "label": label, "prediction": value, "logits": logits.tolist()}
        lines.append(json.dumps(row))
    return lines


def write_predictions(path: Path, outputs: SplitOutputs, task: Task) -> Path:
    """Write ``outputs`` as JSON lines to ``path`` (its folder made if need be); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in prediction_lines(outputs, task)), encoding="utf-8")
    return path


def save_predictions(kept: dict[str, SplitOutputs], task: Task, run_dir: Path, tracker) -> None:
    """Each kept split's predictions to ``run_dir/predictions/<prefix>.jsonl``, logged under ``predictions/``."""
    if not kept:
        return
    for prefix, outputs in kept.items():
        write_predictions(run_dir / FOLDER / f"{prefix}.jsonl", outputs, task)
    tracker.log_artifacts(run_dir / FOLDER, FOLDER)


def read_predictions(path: Path) -> Predictions:
    """A predictions file back (rows in ``id`` order); ValueError for a file that is not one."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows or any("id" not in r or "label" not in r or ("prediction" not in r and "score" not in r) for r in rows):
        raise ValueError(f"{path}: not a predictions file (JSON lines with id, label and prediction or score)")
    rows.sort(key=lambda r: r["id"])
    task = Task.regression if "score" in rows[0] else Task.classification
    key = "score" if task == Task.regression else "prediction"
    return Predictions(task, [r[key] for r in rows], [r["label"] for r in rows])

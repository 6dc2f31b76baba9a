"""Choosing each cell's recipe on the selection split, within the budget its task's reference method sets."""

from __future__ import annotations

import math
from dataclasses import dataclass

from omegaconf import DictConfig

from ptexp.study.spec import Recipe, recipe_label

FILL_MARGIN = 0.9  # budget.fill aims under the budget, so that run-to-run noise keeps the longer runs within it


@dataclass(frozen=True)
class Scored:
    """A finished grid run of a cell: its recipe, selection score and cost."""

    recipe: Recipe
    selection: float  # selection/best_<primary metric>
    train_s: float
    steps: float
    run_id: str

    def summary(self) -> dict:
        return {"recipe": recipe_label(self.recipe), "selection": round(self.selection, 4),
                "train_s": round(self.train_s, 1), "steps": int(self.steps)}  # fmt: skip


def scored(run, recipe: Recipe) -> Scored:
    """A finished MLflow run's score and cost."""
    metrics = run.data.metrics
    primary = run.data.tags.get("ptexp.primary_metric", "accuracy")
    return Scored(recipe, metrics[f"selection/best_{primary}"], metrics["time/train_s"], metrics["train/steps"],
                  run.info.run_id)  # fmt: skip


def budget_limit(budget: DictConfig, reference: Scored | None) -> tuple[str, float] | None:
    """(the measure, its limit) that a recipe must keep to: ``factor`` x the reference's chosen recipe's train
    seconds (rule time) or steps (rule steps); None for rule none or the reference method itself."""
    if budget.rule == "none" or reference is None:
        return None
    measure = "train_s" if budget.rule == "time" else "steps"
    return measure, budget.factor * getattr(reference, measure)


def choose(candidates: list[Scored], limit: tuple[str, float] | None) -> Scored | None:
    """The best selection score among the candidates within the limit (the first in grid order on a tie)."""
    within = [s for s in candidates if limit is None or getattr(s, limit[0]) <= limit[1]]
    return max(within, key=lambda s: s.selection) if within else None


def epochs_within(budget_s: float, per_epoch_s: float, base: float) -> float | None:
    """The most whole epochs whose train time (``per_epoch_s`` each) fits in FILL_MARGIN x ``budget_s``, when
    more than ``base``; else None."""
    epochs = math.floor(FILL_MARGIN * budget_s / per_epoch_s)
    return float(epochs) if epochs > base else None


def fill_recipes(grid: list[Scored], budget_s: float) -> list[Recipe]:
    """budget.fill: the grid again at the most whole epochs that fit ``budget_s``, at the grid runs' mean seconds
    per epoch; [] when no more epochs than the grid's largest fit (or the grid has no trainer.epochs key)."""
    if not grid or "trainer.epochs" not in dict(grid[0].recipe):
        return []
    base = max(float(dict(s.recipe)["trainer.epochs"]) for s in grid)
    per_epoch = sum(s.train_s / float(dict(s.recipe)["trainer.epochs"]) for s in grid) / len(grid)
    epochs = epochs_within(budget_s, per_epoch, base)
    if epochs is None:
        return []
    recipes = [tuple((k, epochs if k == "trainer.epochs" else v) for k, v in s.recipe) for s in grid]
    return [r for i, r in enumerate(recipes) if r not in recipes[:i]]  # more epochs than any grid run: all new

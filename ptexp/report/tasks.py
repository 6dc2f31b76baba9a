"""The task view: one row per (task, model, method) with the model's size, the primary metric over seeds and the
gap to full fine-tuning on the same task and model with its 95 % interval (:mod:`~ptexp.report.intervals`), as text
rows and ``tasks.csv``; and, with ``--study``, each cell's chosen recipe, budget and grid."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ptexp.methods.base import variant_label
from ptexp.report.intervals import Bootstrap, Interval, SeedRun, gap_interval
from ptexp.report.stats import DASH, NA, TOTAL, Group, rows_order, scale, variant_order
from ptexp.report.tables import fmt_pm, num, pair

FULL = "full"
TASK_HEADERS = (
    "task",
    "model",
    "model params",
    "method",
    "metric",
    "seeds",
    "final eval",
    "full fine-tuning",
    "gap to full",
    "95% interval",
    "interval from",
)
TASK_NUMERIC = {"model params", "seeds", "final eval", "full fine-tuning", "gap to full", "95% interval"}
TASK_CSV_HEADERS = (
    "task",
    "train_rows",
    "model",
    "model_params",
    "method",
    "variant",
    "prefix_length",
    "metric",
    "seeds",
    "mean",
    "std",
    "full_mean",
    "gap_to_full",
    "gap_unit",
    "gap_low",
    "gap_high",
    "gap_distinguishable",
    "gap_interval_from",
    "study",
)
NOT_DISTINGUISHABLE = "n.s."
TASK_NOTE = (
    "Final eval value of each task's primary metric, mean ± sample std over seeds; gap to full = mean minus the "
    "mean of full fine-tuning on the same task and model, in points (x100) for metrics in [-1, 1] (accuracy, F1, "
    f"MCC, correlations), raw otherwise (mse: lower is better). {NA}: no full fine-tuning group to compare with. "
    "Model params = the total parameters (params/total) of full fine-tuning's model on that task, head included. "
    "95% interval of the gap: a paired bootstrap over the seeds and the dev examples (the same resampled examples "
    "for both methods; seeds paired when both ran the same ones), the primary metric recomputed from each run's "
    f"predictions artifact; {NOT_DISTINGUISHABLE} = not distinguishable from no gap (the interval contains 0). Runs "
    "without predictions (logged before ptexp wrote them): a t-interval over seeds alone (paired by seed, else "
    "Welch's), which leaves out the dev set's own noise; none with a single seed."
)


@dataclass
class TaskRow:
    group: Group
    full: Group | None  # full fine-tuning on the same task and model, if selected
    interval: Interval | None = None  # of the gap, in its unit
    interval_from: str = ""  # what the interval rests on, or why there is none

    @property
    def method(self) -> str:
        return self.group.method_label

    @property
    def unit(self) -> str:
        return scale(self.group.primary)[1]

    @property
    def model_size(self) -> float | None:
        """The model's total parameters: ``params/total`` of full fine-tuning on this task and model (mean over
        its runs); None without a full group or that metric."""
        return None if self.full is None else self.full.metric(TOTAL).mean

    @property
    def gap(self) -> float | None:
        """(mean - full's mean) in the metric's unit; None without a comparable full group."""
        g, f = self.group, self.full
        if f is None or f.primary != g.primary or g.final.mean is None or f.final.mean is None:
            return None
        return (g.final.mean - f.final.mean) * scale(g.primary)[0]

    @property
    def study(self) -> dict[str, str]:
        """What ``--study`` says of the group's cell (recipe, budget, grid), values that differ joined by `` | ``."""
        keys = list(dict.fromkeys(k for r in self.group.runs for k in r.study))  # recipe, budget, grid
        return {k: " | ".join(sorted({r.study[k] for r in self.group.runs if k in r.study})) for k in keys}

    def add_interval(self, bootstrap: Bootstrap) -> None:
        """The gap's interval (see :func:`~ptexp.report.intervals.gap_interval`), where there is a gap."""
        g, f = self.group, self.full
        if self.gap is None or f is g:
            return
        runs = [[SeedRun(r.seed, r.metrics.get(f"eval/{g.primary}"), r.predictions) for r in x.runs] for x in (g, f)]
        self.interval, self.interval_from = gap_interval(*runs, g.primary, scale(g.primary)[0], bootstrap)


def wants_task_view(groups: list[Group]) -> bool:
    """Several tasks, or a full fine-tuning group to compare with."""
    return len({g.task for g in groups}) > 1 or any(g.method == FULL for g in groups)


def task_rows(groups: list[Group], bootstrap: Bootstrap | None = None) -> list[TaskRow]:
    """One row per group, full fine-tuning first on each task and model; with ``bootstrap``, each gap's interval."""
    fulls = {(g.data, g.train_rows, g.model): g for g in groups if g.method == FULL and not g.variant}
    ordered = sorted(groups, key=lambda g: (g.data, rows_order(g.train_rows), g.model, g.method != FULL, g.method,
                                            variant_order(g.variant)))  # fmt: skip
    rows = [TaskRow(g, fulls.get((g.data, g.train_rows, g.model))) for g in ordered]
    for row in rows if bootstrap is not None else []:
        row.add_interval(bootstrap)
    return rows


def fmt_count(value: float | None) -> str:
    """22700000 -> 22.7M; 1.3e9 -> 1.30B; 45000 -> 45.0k."""
    if value is None:
        return NA
    for bound, unit, spec in ((1e9, "B", ".2f"), (1e6, "M", ".1f"), (1e3, "k", ".1f")):
        if value >= bound:
            return f"{value / bound:{spec}}{unit}"
    return f"{value:.0f}"


def fmt_gap(row: TaskRow) -> str:
    if row.full is row.group:
        return "reference"
    gap = row.gap
    if gap is None:
        return NA
    return f"{gap:+.2f} pts" if row.unit == "points" else f"{gap:+.4f}"


def fmt_interval(row: TaskRow) -> str:
    """``[-4.10, +1.00] n.s.`` (raw units: 4 decimals); DASH for full itself, NA without an interval."""
    if row.full is row.group:
        return DASH
    i = row.interval
    if i is None:
        return NA
    spec = "+.2f" if row.unit == "points" else "+.4f"
    return f"[{i.low:{spec}}, {i.high:{spec}}]" + ("" if i.distinguishable else f" {NOT_DISTINGUISHABLE}")


def fmt_study(row: TaskRow) -> str:
    """``recipe=lr 2e-4, 3 epochs; grid=...``: the study tags, or empty."""
    return "; ".join(f"{k}={v}" for k, v in row.study.items())


def display_task_row(row: TaskRow) -> list[str]:
    g = row.group
    return [
        g.task,
        g.model,
        fmt_count(row.model_size),
        row.method,
        g.primary,
        str(g.final.n),
        fmt_pm(g.final),
        DASH if row.full is None else fmt_pm(row.full.final),
        fmt_gap(row),
        fmt_interval(row),
        DASH if row.full is row.group else (row.interval_from or NA),
    ]


def csv_task_row(row: TaskRow) -> list[Any]:
    g = row.group
    return [
        g.data,
        "all" if g.train_rows is None else g.train_rows,
        g.model,
        NA if row.model_size is None else round(row.model_size),
        g.method,
        variant_label(g.variant),
        "" if g.prefix_length is None else g.prefix_length,
        g.primary,
        g.final.n,
        *pair(g.final),
        NA if row.full is None else num(row.full.final.mean),
        num(row.gap),
        row.unit,
        *((NA, NA) if row.interval is None else (row.interval.low, row.interval.high)),
        NA if row.interval is None else str(row.interval.distinguishable).lower(),
        row.interval_from or NA,
        fmt_study(row),
    ]


def write_tasks_csv(path: Path, rows: list[TaskRow]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(TASK_CSV_HEADERS)
        writer.writerows(csv_task_row(r) for r in rows)

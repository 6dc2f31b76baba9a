"""The report's statistics: finished runs grouped by (method, model, data, train rows, variant), mean ± sample std
over their seeds, and the warnings about what a group averages. No MLflow, no matplotlib. A variant is what the method's
``variant`` keys name (:class:`~ptexp.methods.base.MethodSpec`): P for prefix and prompt tuning, r for LoRA, ...

Each run has a primary metric (tag ``ptexp.primary_metric``; ``accuracy`` for runs logged before it existed). A
group's headline is the last logged ``eval/<primary>``. ``eval/best_<primary>`` is the best value over the eval
split's own history: selected on the split it reports, so optimistic, and always labelled so. When a selection split
was carved from train, ``selection/best_<primary>`` is the selection score and ``selection/best_step`` the step it
picks; the eval value at that step is an honest "selected" value."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from ptexp.config import VOLATILE
from ptexp.methods.base import variant_label
from ptexp.predictions import Predictions

FINISHED = "FINISHED"
ACCURACY, LOSS, F1 = "eval/accuracy", "train/loss", "eval/macro_f1"
DEFAULT_PRIMARY = "accuracy"  # runs logged before ptexp.primary_metric existed
SELECTION_STEP = "selection/best_step"
POINTS = frozenset({"accuracy", "f1", "macro_f1", "mcc", "pearson", "spearman"})  # in [-1, 1]: gaps x100, in points
TRAINABLE, TOTAL, TRAINABLE_PCT = "params/trainable", "params/total", "params/trainable_pct"
TRAIN_S, SPEED, PEAK_MB = "time/train_s", "throughput/train_samples_per_s", "memory/peak_mb"
ADAPTER_BYTES = "adapter/bytes"  # shown when present (runs before it was logged: n/a), never warned about
# the inference timing (ptexp/inference.py), like adapter/bytes never warned about; merged: LoRA and IA3 only
INFER_MS, MERGED_MS, INFER_BATCH = "infer/ms_per_example", "infer/merged_ms_per_example", "infer/batch_size"
EXPECTED = (LOSS, TRAINABLE, TOTAL, TRAINABLE_PCT, TRAIN_S, SPEED, PEAK_MB)  # and eval/<primary>
NA, DASH = "n/a", "—"


@dataclass
class RunData:
    run_id: str
    name: str
    status: str
    method: str
    model: str
    data: str
    prefix_length: int | None
    seed: str
    metrics: dict[str, float]  # MLflow's latest value per key (highest step, then latest timestamp)
    variant: tuple[tuple[str, str], ...] = ()  # (label, value) per variant key of the method, e.g. (("r", "8"),)
    error: str = ""
    primary: str = DEFAULT_PRIMARY
    select_best: bool = False  # trainer.select_best: the final eval/* are those of selection/best_step's parameters
    params: dict[str, str] = field(default_factory=dict)
    histories: dict[str, dict[int, float]] = field(default_factory=dict)  # step -> value (last logged at that step)
    predictions: Predictions | None = None  # the final eval's predictions artifact (None: not logged, or not read)
    study: dict[str, str] = field(default_factory=dict)  # report --study: its cell's recipe, budget, grid
    train_rows: int | None = None  # data.max_train_samples: the cap on train rows (None: the whole split)

    @property
    def key(self) -> tuple[str, str, str, int | None, tuple[tuple[str, str], ...]]:
        return (self.method, self.model, self.data, self.train_rows, self.variant)

    def best_on_eval(self) -> float | None:
        """``eval/best_<primary>``, else the best of the ``eval/<primary>`` history: optimistic either way."""
        logged = self.metrics.get(f"eval/best_{self.primary}")
        if logged is not None:
            return logged
        values = self.histories.get(f"eval/{self.primary}")
        if not values:
            return None
        return (min if self.primary == "mse" else max)(values.values())

    def selected_eval(self) -> float | None:
        """The eval value of the step the selection split picked: the final one under select_best, else the
        ``eval/<primary>`` history at ``selection/best_step``; None without a selection split."""
        if f"selection/best_{self.primary}" not in self.metrics or SELECTION_STEP not in self.metrics:
            return None
        if self.select_best:
            return self.metrics.get(f"eval/{self.primary}")
        return self.histories.get(f"eval/{self.primary}", {}).get(int(self.metrics[SELECTION_STEP]))


@dataclass
class Stat:
    """Mean and sample std (ddof=1) of the values present; n = how many; std is None for a single value."""

    values: list[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if self.n > 1 else None


def variant_order(variant: tuple[tuple[str, str], ...]) -> tuple:
    """A sort key: numbers as numbers (P=5 before P=10), other values as text."""

    def value(text: str) -> tuple:
        try:
            return (0, float(text), "")
        except ValueError:
            return (1, 0.0, text)

    return tuple((label, value(text)) for label, text in variant)


@dataclass
class Group:
    method: str
    model: str
    data: str
    train_rows: int | None  # the runs' cap on train rows (None: the whole split)
    variant: tuple[tuple[str, str], ...]
    runs: list[RunData]
    label: str = ""
    task: str = ""  # the data, and its train rows where groups of that data differ in them: ``sst2 (100 rows)``

    @property
    def method_label(self) -> str:
        """The method and its variant: ``prefix P=20``, ``lora r=8``, ``full``."""
        return " ".join([self.method, variant_label(self.variant)]).strip()

    @property
    def prefix_length(self) -> int | None:
        """The runs' prefix length P, where they share one (prefix and prompt tuning); else None."""
        lengths = {r.prefix_length for r in self.runs}
        return lengths.pop() if len(lengths) == 1 else None

    def stat(self, fn) -> Stat:
        values = [fn(r) for r in self.runs]
        return Stat([v for v in values if v is not None and not math.isnan(v)])

    def metric(self, key: str) -> Stat:
        return self.stat(lambda r: r.metrics.get(key))

    @property
    def primary(self) -> str:
        """The runs' primary metric (the most common one, should they differ: check_runs warns)."""
        names = [r.primary for r in self.runs]
        return max(sorted(set(names)), key=names.count)

    @property
    def final(self) -> Stat:
        """The headline: the last logged ``eval/<primary>``."""
        return self.metric(f"eval/{self.primary}")

    @property
    def best_on_eval(self) -> Stat:
        return self.stat(RunData.best_on_eval)

    @property
    def selected(self) -> Stat:
        return self.stat(RunData.selected_eval)

    @property
    def selection_score(self) -> Stat:
        return self.metric(f"selection/best_{self.primary}")

    @property
    def trainable_fraction(self) -> Stat:
        def fraction(r: RunData) -> float | None:
            if r.metrics.get(TRAINABLE) is not None and r.metrics.get(TOTAL):
                return r.metrics[TRAINABLE] / r.metrics[TOTAL]
            pct = r.metrics.get(TRAINABLE_PCT)
            return None if pct is None else pct / 100

        return self.stat(fraction)


def make_groups(finished: list[RunData]) -> list[Group]:
    by_key: dict[tuple, list[RunData]] = {}
    for run in finished:
        by_key.setdefault(run.key, []).append(run)
    groups = [Group(*key, runs=runs) for key, runs in by_key.items()]
    groups.sort(key=lambda g: (g.model, g.data, rows_order(g.train_rows), g.method, variant_order(g.variant)))
    caps: dict[str, set[int | None]] = {}
    for g in groups:
        caps.setdefault(g.data, set()).add(g.train_rows)
    for g in groups:
        g.task = g.data if len(caps[g.data]) == 1 else f"{g.data} ({rows_label(g.train_rows)})"
    # Labels name only what varies between groups, so plot legends stay short.
    varies = {attr: len({getattr(g, attr) for g in groups}) > 1 for attr in ("model", "task")}
    for g in groups:
        extra = [getattr(g, attr) for attr in ("model", "task") if varies[attr]]
        g.label = g.method_label + (f" ({', '.join(extra)})" if extra else "")
    return groups


def rows_order(rows: int | None) -> float:
    """Capped train rows by size, the whole split last."""
    return math.inf if rows is None else rows


def rows_label(rows: int | None) -> str:
    return "all rows" if rows is None else f"{rows:,} rows"


def common_primary(groups: list[Group]) -> str | None:
    """The primary metric all groups share, or None when they differ."""
    names = {g.primary for g in groups}
    return names.pop() if len(names) == 1 else None


def scale(metric: str) -> tuple[float, str]:
    """(factor, unit) of a difference in ``metric``: points (x100) for metrics in [-1, 1], else raw."""
    return (100.0, "points") if metric in POINTS else (1.0, "raw")


def check_runs(groups: list[Group]) -> list[str]:
    """Warnings: metrics a finished run lacks, seeds used twice, runs of one group whose configs differ."""
    warnings = []
    for g in groups:
        for r in g.runs:
            missing = [k for k in (f"eval/{r.primary}", *EXPECTED) if k not in r.metrics]
            if missing:
                warnings.append(
                    f"run {r.name} ({r.run_id}) has no {', '.join(missing)}: "
                    f"left out of those means ({NA} if no run has it)"
                )
        primaries = sorted({r.primary for r in g.runs})
        if len(primaries) > 1:
            warnings.append(f"group {g.label} mixes primary metrics {', '.join(primaries)}; headline: {g.primary}")
        seeds = [r.seed for r in g.runs]
        repeated = sorted({s for s in seeds if seeds.count(s) > 1})
        if repeated:
            warnings.append(f"group {g.label}: seed {', '.join(repeated)} appears in more than one run")
        keys = {k for r in g.runs for k in r.params if not k.startswith(VOLATILE)}
        differ = sorted(k for k in keys if len({r.params.get(k) for r in g.runs}) > 1)
        if differ:
            more = f" and {len(differ) - 5} more" if len(differ) > 5 else ""
            warnings.append(f"group {g.label} averages runs whose configs differ in {', '.join(differ[:5])}{more}")
    return warnings

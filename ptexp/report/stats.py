"""The report's statistics: finished runs grouped by (method, model, data, prefix_length), mean ± sample std over
their seeds, and the warnings about what a group averages. No MLflow, no matplotlib."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

FINISHED = "FINISHED"
ACCURACY, LOSS, F1 = "eval/accuracy", "train/loss", "eval/macro_f1"
TRAINABLE, TOTAL, TRAINABLE_PCT = "params/trainable", "params/total", "params/trainable_pct"
TRAIN_S, SPEED, PEAK_MB = "time/train_s", "throughput/train_samples_per_s", "memory/peak_mb"
ADAPTER_BYTES = "adapter/bytes"  # shown when present (runs before it was logged: n/a), never warned about
EXPECTED = (ACCURACY, F1, LOSS, TRAINABLE, TOTAL, TRAINABLE_PCT, TRAIN_S, SPEED, PEAK_MB)
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
    error: str = ""
    params: dict[str, str] = field(default_factory=dict)
    histories: dict[str, dict[int, float]] = field(default_factory=dict)  # step -> value (last logged at that step)

    @property
    def key(self) -> tuple[str, str, str, int | None]:
        return (self.method, self.model, self.data, self.prefix_length)


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


@dataclass
class Group:
    method: str
    model: str
    data: str
    prefix_length: int | None
    runs: list[RunData]
    label: str = ""

    def stat(self, fn) -> Stat:
        values = [fn(r) for r in self.runs]
        return Stat([v for v in values if v is not None and not math.isnan(v)])

    def metric(self, key: str) -> Stat:
        return self.stat(lambda r: r.metrics.get(key))

    @property
    def final_accuracy(self) -> Stat:
        return self.metric(ACCURACY)

    @property
    def best_accuracy(self) -> Stat:
        return self.stat(lambda r: max(r.histories[ACCURACY].values()) if r.histories.get(ACCURACY) else None)

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
    groups.sort(key=lambda g: (g.model, g.data, g.method, -1 if g.prefix_length is None else g.prefix_length))
    # Labels name only what varies between groups, so plot legends stay short.
    varies = {attr: len({getattr(g, attr) for g in groups}) > 1 for attr in ("model", "data")}
    for g in groups:
        label = g.method + ("" if g.prefix_length is None else f" P={g.prefix_length}")
        extra = [getattr(g, attr) for attr in ("model", "data") if varies[attr]]
        g.label = label + (f" ({', '.join(extra)})" if extra else "")
    return groups


IGNORED_PARAMS = ("seed", "output_root", "trainer.progress", "tracking.")  # may differ within a group


def check_runs(groups: list[Group]) -> list[str]:
    """Warnings: metrics a finished run lacks, seeds used twice, runs of one group whose configs differ."""
    warnings = []
    for g in groups:
        for r in g.runs:
            missing = [k for k in EXPECTED if k not in r.metrics]
            if missing:
                warnings.append(
                    f"run {r.name} ({r.run_id}) has no {', '.join(missing)}: "
                    f"left out of those means ({NA} if no run has it)"
                )
        seeds = [r.seed for r in g.runs]
        repeated = sorted({s for s in seeds if seeds.count(s) > 1})
        if repeated:
            warnings.append(f"group {g.label}: seed {', '.join(repeated)} appears in more than one run")
        keys = {k for r in g.runs for k in r.params if not k.startswith(IGNORED_PARAMS)}
        differ = sorted(k for k in keys if len({r.params.get(k) for r in g.runs}) > 1)
        if differ:
            more = f" and {len(differ) - 5} more" if len(differ) > 5 else ""
            warnings.append(f"group {g.label} averages runs whose configs differ in {', '.join(differ[:5])}{more}")
    return warnings

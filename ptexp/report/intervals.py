"""95 % intervals for a method's gap to full fine-tuning, from the runs' per-example predictions.

The gap is (mean over the method's seeds) minus (mean over full's seeds) of the task's primary metric on the dev
set. Two things make it uncertain: which seeds ran, and which dev examples the task happens to have. The paired
bootstrap draws both, ``draws`` times: the dev examples with replacement, the *same* example indices for every run
of the task and model (so both methods are scored on the same resampled dev set, paired per example), and each
method's seeds with replacement (the same seed draws for both methods when they ran the same seeds: paired by seed;
else independently). Each draw's gap is computed with :func:`ptexp.metrics.compute` on the resampled predictions;
the interval is the 2.5th to 97.5th percentile of the draws. A fixed ``seed`` makes the report reproducible.

Runs without a predictions artifact (logged before ptexp wrote one) get a seed-only interval: a t-interval on the
per-seed gaps (paired by seed when the seeds match, else Welch's), which leaves out the dev set's sampling noise;
none with a single seed.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

import numpy as np

from ptexp.predictions import Predictions

DRAWS, SEED, LEVEL = 1000, 0, 0.95
BOTH, SEEDS_ONLY = "seeds + dev examples", "seeds only"  # what an interval resamples


@dataclass(frozen=True)
class Interval:
    """A 95 % interval of a gap, in the gap's unit, and what it accounts for (``BOTH`` or ``SEEDS_ONLY``)."""

    low: float
    high: float
    source: str

    @property
    def distinguishable(self) -> bool:
        """Whether the interval leaves out 0: the gap is told apart from no gap."""
        return self.low > 0 or self.high < 0


@dataclass
class Bootstrap:
    """The paired bootstrap (see the module); each set of runs' resampled scores is computed once per report."""

    draws: int = DRAWS
    seed: int = SEED
    _scores: dict[tuple, np.ndarray] = field(default_factory=dict)

    def example_draws(self, rows: int) -> list[np.ndarray]:
        """Draw ``b``'s example indices: a generator seeded by (seed, b), so the same for every run of ``rows``."""
        return [np.random.default_rng([self.seed, b]).integers(0, rows, rows) for b in range(self.draws)]

    def scores(self, runs: list[Predictions], metric: str) -> np.ndarray:
        """(draws, runs): ``metric`` of each run's predictions on each draw's resampled examples."""
        from ptexp.metrics import compute

        key = (metric, *(id(run) for run in runs))
        if key not in self._scores:
            rows = len(runs[0].labels)
            values = [(np.asarray(r.predictions), np.asarray(r.labels)) for r in runs]
            self._scores[key] = np.array(
                [[compute([metric], p[idx], y[idx])[metric] for p, y in values] for idx in self.example_draws(rows)]
            )
        return self._scores[key]

    def seed_draws(self, count: int, stream: int) -> np.ndarray:
        """(draws, count) seed indices, drawn with replacement."""
        return np.random.default_rng([self.seed, self.draws, stream]).integers(0, count, (self.draws, count))

    def gap(
        self,
        method: dict[str, Predictions],
        full: dict[str, Predictions],
        metric: str,
        factor: float,
    ) -> Interval:
        """The interval of ``factor`` x (method's mean - full's mean) of ``metric``; runs keyed by seed.

        Raises ValueError when the runs were not scored on the same dev examples (labels differ)."""
        runs = [*method.values(), *full.values()]
        if any(r.labels != runs[0].labels for r in runs):
            raise ValueError("the runs' predictions are not of the same dev examples (their labels differ)")
        mine, theirs = (self.scores([m[s] for s in sorted(m)], metric) for m in (method, full))
        picks = self.seed_draws(len(method), 1)
        other = picks if sorted(method) == sorted(full) else self.seed_draws(len(full), 2)
        gaps = factor * (np.take_along_axis(mine, picks, 1).mean(1) - np.take_along_axis(theirs, other, 1).mean(1))
        tail = 100 * (1 - LEVEL) / 2
        low, high = np.percentile(gaps, [tail, 100 - tail])
        return Interval(float(low), float(high), BOTH)


def seed_interval(method: dict[str, float], full: dict[str, float], factor: float) -> Interval | None:
    """A t-interval of ``factor`` x (method's mean - full's mean) over seeds alone (values keyed by seed): paired
    by seed when both ran the same seeds, else Welch's; None with fewer than two seeds on a side."""
    from scipy import stats

    tail = (1 + LEVEL) / 2
    if sorted(method) == sorted(full) and len(method) >= 2:
        diffs = [method[s] - full[s] for s in method]
        centre, se, df = statistics.fmean(diffs), statistics.stdev(diffs) / math.sqrt(len(diffs)), len(diffs) - 1
    elif len(method) >= 2 and len(full) >= 2:
        va, vb = (statistics.variance(v.values()) / len(v) for v in (method, full))
        centre = statistics.fmean(method.values()) - statistics.fmean(full.values())
        se = math.sqrt(va + vb)
        df = (va + vb) ** 2 / (va**2 / (len(method) - 1) + vb**2 / (len(full) - 1)) if va + vb > 0 else 1
    else:
        return None
    half = float(stats.t.ppf(tail, df)) * se
    return Interval(factor * (centre - half), factor * (centre + half), SEEDS_ONLY)


@dataclass(frozen=True)
class SeedRun:
    """One run of a group, as the interval needs it: its seed, its logged final value of the primary metric, and
    its predictions (None: no artifact)."""

    seed: str
    value: float | None
    predictions: Predictions | None = None


def by_seed(runs: list[SeedRun], what: str) -> dict[str, object]:
    """``what`` ("value" or "predictions") of each run keyed by seed; a seed used twice keys its later runs apart
    (so they pair with nothing)."""
    out: dict[str, object] = {}
    for i, run in enumerate(runs):
        out[run.seed if run.seed not in out else f"{run.seed}#{i}"] = getattr(run, what)
    return out


def gap_interval(
    method: list[SeedRun], full: list[SeedRun], metric: str, factor: float, bootstrap: Bootstrap
) -> tuple[Interval | None, str]:
    """(interval, what it rests on) of the gap of ``method`` to ``full``: the paired bootstrap when every run has
    predictions, else a seed-only interval from the logged values, else none."""
    if all(r.predictions is not None for r in [*method, *full]):
        try:
            return bootstrap.gap(by_seed(method, "predictions"), by_seed(full, "predictions"), metric, factor), BOTH
        except ValueError as err:
            return None, f"none: {err}"
    values = [by_seed([r for r in runs if r.value is not None], "value") for runs in (method, full)]
    interval = seed_interval(values[0], values[1], factor)
    if interval is None:
        return None, "none: no predictions artifact and a single seed"
    return interval, f"{SEEDS_ONLY}: no predictions artifact"

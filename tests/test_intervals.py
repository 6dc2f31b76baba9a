"""The gap intervals: the paired bootstrap over seeds and dev examples, and the seed-only fallback."""

from __future__ import annotations

import numpy as np
import pytest

from ptexp.config import Task
from ptexp.predictions import Predictions
from ptexp.report.intervals import BOTH, SEEDS_ONLY, Bootstrap, SeedRun, gap_interval, seed_interval


def runs_right(labels: list[int], rate: float, seeds: tuple[str, ...] = ("1", "2", "3")) -> dict[str, Predictions]:
    """Per seed, predictions right on about ``rate`` of the rows (each seed its own rows)."""
    out = {}
    for seed in seeds:
        right = np.random.default_rng(int(seed)).random(len(labels)) < rate
        predicted = [y if ok else 1 - y for y, ok in zip(labels, right, strict=True)]
        out[seed] = Predictions(Task.classification, predicted, labels)
    return out


def labels_of(rows: int) -> list[int]:
    return np.random.default_rng(7).integers(0, 2, rows).tolist()


def test_identical_predictions_give_the_interval_0_0_not_distinguishable():
    labels = labels_of(200)
    same = runs_right(labels, 0.7)
    interval = Bootstrap(draws=100).gap(same, dict(same), "accuracy", 100.0)
    assert (interval.low, interval.high, interval.source) == (0.0, 0.0, BOTH)
    assert not interval.distinguishable


def test_a_large_gap_on_many_examples_excludes_0_and_more_examples_narrow_the_interval():
    widths = []
    for rows in (100, 1600):
        labels = labels_of(rows)
        interval = Bootstrap(draws=100).gap(runs_right(labels, 0.9), runs_right(labels, 0.6), "accuracy", 100.0)
        assert interval.distinguishable and 15 < interval.low < interval.high < 45, interval  # about 30
        widths.append(interval.high - interval.low)
    assert widths[1] < widths[0] / 2, widths  # sqrt(16) = 4x fewer points of noise, give or take the seeds


def test_a_small_gap_on_few_examples_is_not_distinguishable_and_the_bootstrap_is_seeded():
    labels = labels_of(60)
    args = (runs_right(labels, 0.72, ("1", "2")), runs_right(labels, 0.7, ("4", "5", "6")), "accuracy", 100.0)
    first, again = Bootstrap(draws=100).gap(*args), Bootstrap(draws=100).gap(*args)
    assert first == again and first.low < 0 < first.high and not first.distinguishable


def test_runs_on_other_dev_rows_are_refused():
    with pytest.raises(ValueError, match="not of the same dev examples"):
        Bootstrap(draws=10).gap(runs_right(labels_of(50), 0.8), runs_right(labels_of(60), 0.8), "accuracy", 100.0)


def test_without_predictions_the_interval_rests_on_the_seeds_alone():
    paired = seed_interval({"1": 0.80, "2": 0.82, "3": 0.81}, {"1": 0.70, "2": 0.73, "3": 0.71}, 100.0)
    assert paired.source == SEEDS_ONLY and paired.distinguishable and paired.low < 9.67 < paired.high
    welch = seed_interval({"1": 0.80, "2": 0.60}, {"3": 0.70, "4": 0.72}, 100.0)
    assert welch.low < 0 < welch.high
    assert seed_interval({"1": 0.8}, {"1": 0.7, "2": 0.72}, 100.0) is None
    runs = [SeedRun("1", 0.8), SeedRun("2", 0.81)]
    with_one = [SeedRun("1", 0.7, Predictions(Task.classification, [1], [1]))]
    interval, note = gap_interval(runs, with_one, "accuracy", 100.0, Bootstrap(draws=10))
    assert interval is None and note == "none: no predictions artifact and a single seed"

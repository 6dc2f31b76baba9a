"""The tables, targets and wall-time estimate of benchmarks/tasks.py (which see)."""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from common import finished_runs, markdown_table, mean_std, store_uri
from tasks import (
    MAIN_METHODS,
    OTHER_METHODS,
    PEERS,
    TASKS,
    ours,
    recipe_label,
    selection_rows,
)
from tasks_plot import time_score_plot

from ptexp.report.intervals import Bootstrap, Interval, SeedRun, gap_interval
from ptexp.report.runs import load_predictions

ORDER = [*MAIN_METHODS, *OTHER_METHODS, *PEERS]  # the table's row order

TARGETS = {"lora": 1.5, "prefix": 2.0}  # method -> largest gap to full, in points, at <= full's train time
PEER_TIME = {"hf_trainer": 0.6, "hf_trainer_grouped": 0.9}  # full's train time <= this x the peer's (full's recipe)


def task_rows(name: str, args: argparse.Namespace) -> dict[str, dict]:
    """recipe label -> numbers, for this invocation's train rows; the label's values in MLflow units."""
    task = TASKS[name]
    rows = str(args.train_rows or task.train_rows)
    groups: dict[str, list] = {}
    for run in finished_runs(args.output_root, f"{args.experiment}-{name}"):
        method, params = run.data.tags.get("ptexp.method"), run.data.params
        if method in ORDER and ours(run) and params.get("data.max_train_samples") == rows:
            groups.setdefault(recipe_label(method, params), []).append(run)
    table = {}
    for label, runs in groups.items():
        scores = [r.data.metrics[f"eval/{task.metric}"] for r in runs]
        mean, std = mean_std(scores)
        table[label] = {
            "method": runs[0].data.tags["ptexp.method"], "seeds": len(runs), "mean": mean, "std": std,
            "scores": scores, "train_s": mean_std([r.data.metrics["time/train_s"] for r in runs])[0],
            "seconds": {int(r.data.params["seed"]): r.data.metrics["time/train_s"] for r in runs},
            "trainable_pct": runs[0].data.metrics.get("params/trainable_pct"), "last": runs[-1].info.start_time,
            "runs": [(r.data.params["seed"], r.data.metrics[f"eval/{task.metric}"], r.info.run_id) for r in runs],
            "selection_curve": selection_curve(runs, task.metric, args) if runs[0].data.tags["ptexp.method"]
            in MAIN_METHODS else {},
        }  # fmt: skip
    return table


def time_ratio(row: dict, base: dict) -> float:
    """``row``'s train time over ``base``'s: the mean of the per-seed ratios over the seeds both ran (each seed's
    runs are timed in the same invocation, side by side), else the ratio of the means."""
    common = sorted(row["seconds"].keys() & base["seconds"].keys())
    if not common:
        return row["train_s"] / base["train_s"]
    return sum(row["seconds"][seed] / base["seconds"][seed] for seed in common) / len(common)


def selection_curve(runs: list, metric: str, args: argparse.Namespace) -> dict[int, float]:
    """step -> the selection split's ``<metric>`` at that evaluation (each epoch end), mean over the runs: scored
    before select_best restores anything, so it says whether more epochs would still help."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store_uri(args.output_root))
    by_step: dict[int, list[float]] = {}
    for run in runs:
        for point in client.get_metric_history(run.info.run_id, f"selection/{metric}"):
            by_step.setdefault(point.step, []).append(point.value)
    return {step: sum(values) / len(values) for step, values in sorted(by_step.items())}


IntervalOf = Callable[[dict, dict], tuple[Interval | None, str]]  # (row, base) -> row minus base, in points


class Gaps:
    """The 95 % interval of one row's gap to another (:func:`ptexp.report.intervals.gap_interval`: the paired
    bootstrap from the runs' predictions artifacts, else seeds only), each run's predictions read once."""

    def __init__(self, args: argparse.Namespace, metric: str):
        from mlflow.tracking import MlflowClient

        self.client, self.metric, self.bootstrap = MlflowClient(store_uri(args.output_root)), metric, Bootstrap()
        self.folder = tempfile.TemporaryDirectory(prefix="ptexp-tasks-")
        self.loaded: dict[str, object] = {}

    def seed_runs(self, row: dict) -> list[SeedRun]:
        for _, _, run_id in row["runs"]:
            if run_id not in self.loaded:
                self.loaded[run_id] = load_predictions(self.client, run_id, Path(self.folder.name))
        return [SeedRun(str(seed), value, self.loaded[run_id]) for seed, value, run_id in row["runs"]]

    def __call__(self, row: dict, base: dict) -> tuple[Interval | None, str]:
        return gap_interval(self.seed_runs(row), self.seed_runs(base), self.metric, 100.0, self.bootstrap)


def fmt_interval(found: tuple[Interval | None, str]) -> str:
    """``[-4.1, +0.3] (seeds + dev examples)``, or why there is none."""
    interval, source = found
    return source if interval is None else f"[{interval.low:+.1f}, {interval.high:+.1f}] ({source})"


def main_row(table: dict[str, dict], method: str, chosen: dict) -> dict | None:
    """A method's row for the targets: the recipe chosen on the selection split, else the most seeds, then the
    latest (the peers, the other methods)."""
    if method in chosen:
        return table.get(chosen[method]["label"])
    mine = [row for row in table.values() if row["method"] == method]
    return max(mine, key=lambda row: (row["seeds"], row["last"])) if mine else None


def targets(table: dict[str, dict], metric: str, chosen: dict, interval: IntervalOf) -> list[tuple[bool, str]]:
    """(passed, line) per issue-15 target, from the measured rows; a missing row is a MISS. A gap passes when its
    95 % interval's lower end clears the target (``interval``: row, base -> the interval of row minus base), not
    its point estimate; without an interval it misses."""
    full, lines = main_row(table, "full", chosen), []
    for peer, share in PEER_TIME.items():
        other, title = main_row(table, peer, chosen), PEERS[peer].title
        if full is None or other is None:
            lines.append((False, f"full >= {title} at <= {share}x its time: no runs"))
            continue
        ratio, found = time_ratio(full, other), interval(full, other)
        ok = found[0] is not None and found[0].low >= 0 and ratio <= share
        lines.append((ok, f"full {100 * full['mean']:.1f} >= {title} {100 * other['mean']:.1f} {metric}: gap "
                          f"{fmt_interval(found)}, at {ratio:.2f}x its train time (target <= {share})"))  # fmt: skip
    for method, gap in TARGETS.items():
        row = main_row(table, method, chosen)
        if full is None or row is None:
            lines.append((False, f"{method} within {gap} pt of full at <= full's time: no runs"))
            continue
        behind, ratio, found = 100 * (full["mean"] - row["mean"]), time_ratio(row, full), interval(row, full)
        ok = found[0] is not None and found[0].low >= -gap and ratio <= 1.0
        where = f"{behind:.1f} pt behind full" if behind > 0 else f"{-behind:.1f} pt ahead of full"
        lines.append((ok, f"{method} {where}, 95% interval {fmt_interval(found)} (target: its lower end at most "
                          f"{gap} behind), at {ratio:.2f}x full's time"))  # fmt: skip
    return lines


def task_markdown(
    name: str, table: dict[str, dict], args: argparse.Namespace, chosen: dict, interval: IntervalOf
) -> str:
    task, full = TASKS[name], main_row(table, "full", chosen)
    picked = {row["label"] for row in chosen.values()}
    headers = ("method, recipe", "seeds", f"dev {task.metric} (x100)", "train s", "/ full's", "trainable %", "gap")
    rows = []
    for label, row in sorted(table.items(), key=lambda kv: (ORDER.index(kv[1]["method"]), kv[0])):
        share = f"{time_ratio(row, full):.2f}" if full else "n/a"
        gap = f"{100 * (row['mean'] - full['mean']):+.1f} pt" if full else "n/a"
        pct = f"{row['trainable_pct']:.3f}" if row["trainable_pct"] is not None else "n/a"
        name_cell = f"**{label}** (chosen)" if label in picked else label
        rows.append((name_cell, row["seeds"], f"{100 * row['mean']:.1f} ± {100 * row['std']:.1f}",
                     f"{row['train_s']:.0f}", share, pct, gap))  # fmt: skip
    found = targets(table, task.metric, chosen, interval)
    checks = "\n".join(f"- {'PASS' if ok else 'MISS'}: {line}" for ok, line in found)
    tried = "; ".join(f"{m}: {c['tried']}" for m, c in chosen.items())
    curves = "; ".join(
        f"{m}: " + ", ".join(f"{100 * v:.1f}" for v in table[c["label"]]["selection_curve"].values())
        for m, c in chosen.items()
        if c["label"] in table
    )
    rows_note = args.train_rows or task.train_rows or "all"
    return (
        f"### {name} ({task.preset}, train rows {rows_note}, selection rows {selection_rows(name, args)}, dev)\n\n"
        f"{markdown_table(headers, rows)}\n\nselection/best_{task.metric} of seed 1 per lr: {tried}\n\n"
        f"selection {task.metric} (x100) at each evaluation, chosen recipes, mean over seeds: {curves}\n\n{checks}\n"
    )


def overview_cell(row: dict | None, full: dict | None, interval: IntervalOf) -> str:
    """``mean ± std (gap to full) [seeds]``, x100; no std for one seed, no gap without ``full``; the gap is marked
    ``n.s.`` where its 95 % interval contains 0 (and ``?`` where it has none)."""
    if row is None:
        return "n/a"
    spread = f" ± {100 * row['std']:.1f}" if row["seeds"] > 1 else ""
    gap = ""
    if full:
        found = interval(row, full)[0]
        mark = "?" if found is None else ("" if found.distinguishable else ", n.s.")
        gap = f" ({100 * (row['mean'] - full['mean']):+.1f}{mark})"
    return f"{100 * row['mean']:.1f}{spread}{gap} [{row['seeds']}]"


def overview(tables: dict[str, dict], recipes: dict, intervals: dict[str, IntervalOf]) -> str:
    """One row per task: each main method's and peer's primary dev metric (x100, mean over seeds, with seeds),
    the gap to full (prefix, LoRA, the peers at full's recipe), and full's train time over each such peer's."""
    headers = ("task (metric)", "full", "prefix (gap)", "LoRA (gap)", "Trainer, full's recipe (gap)",
               "grouped, full's recipe (gap)", "Trainer, run_glue", "grouped, run_glue",
               "full's time / Trainer's, / grouped's (full's recipe)")  # fmt: skip
    gapped = ("prefix", "lora", *PEER_TIME)
    rows = []
    for name, table in tables.items():
        found = {m: main_row(table, m, recipes.get(name, {})) for m in (*MAIN_METHODS, *PEERS)}
        full = found["full"]
        times = [f"{time_ratio(full, found[p]):.2f}" if full and found[p] else "n/a" for p in PEER_TIME]
        cells = (overview_cell(found[m], full if m in gapped else None, intervals[name]) for m in found)
        rows.append((f"{name} ({TASKS[name].metric})", *cells, " / ".join(times)))
    return markdown_table(headers, rows) + (
        "\n\n[n]: the number of seeds. n.s.: the gap's 95% interval (paired bootstrap over seeds and dev examples "
        "from the predictions artifacts, else over seeds alone) contains 0; ?: no interval (one seed, no predictions)."
        " Time ratios: the mean over seeds of each seed's ratio (a seed's runs are timed in the same invocation)."
        " Trainer: Hugging Face Trainer (benchmarks/hf_peer.py) with random batches; grouped: with group_by_length;"
        " full's recipe: full's chosen learning rate and epochs with its best epoch on the selection split;"
        " run_glue: lr 2e-5, 3 epochs, no warm-up or weight decay, the last step."
    )


def report(args: argparse.Namespace, recipes: dict) -> None:
    """Print and write the per-task tables and targets, and a JSON of every number."""
    tables = {name: task_rows(name, args) for name in args.tasks}
    intervals = {name: Gaps(args, TASKS[name].metric) for name in tables}
    args.output_root.mkdir(parents=True, exist_ok=True)
    text = (
        f"## MiniLM-L6 across GLUE tasks (experiment {args.experiment!r}; learning rates chosen on the selection "
        f"split, {args.recipes.name})\n\n"
    )
    text += overview(tables, recipes, intervals) + "\n\n"
    text += "\n".join(
        task_markdown(name, table, args, recipes.get(name, {}), intervals[name]) for name, table in tables.items()
    )
    plot = time_score_plot(tables, recipes, {name: TASKS[name].metric for name in tables},
                           args.output_root / f"{args.experiment}_time_score.png")  # fmt: skip
    text += f"\nTime-score curves (selection split, chosen learning rates): {plot.name}\n" if plot else ""
    print("\n" + text)
    (args.output_root / f"{args.experiment}.md").write_text(text)
    numbers = {name: {"rows": table, "chosen": recipes.get(name, {}),
                      "targets": targets(table, TASKS[name].metric, recipes.get(name, {}), intervals[name])}
               for name, table in tables.items()}  # fmt: skip
    (args.output_root / f"{args.experiment}.json").write_text(json.dumps(numbers, indent=2) + "\n")
    print(f"written: {args.output_root / args.experiment}.md and .json")

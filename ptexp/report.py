"""Side-by-side report of ptexp runs in MLflow: ``python -m ptexp.report [--sweep ID | --all | --filter ...]``.

Reads the runs of one sweep (by default the latest), of a filter, or of the whole experiment; groups the
finished ones by (method, model, data, prefix_length); and writes, under ``--out``, a summary table as
``report.md``, ``report.csv`` and a self-contained ``report.html`` (plots embedded), plus PNG plots. Failed,
killed and unfinished runs are listed apart and never averaged in. For a sweep, the files are also logged as
artifacts of its parent run under ``report/`` (unless ``--no-attach``).

Exit status: 0 report written; 1 nothing to report (empty selection, or no finished run); 2 a usage or
store error (one line on stderr).
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import html
import logging
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The same fail-fast settings as ptexp.tracking, for an unreachable tracking server.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)

FINISHED = "FINISHED"
ACCURACY, LOSS, F1 = "eval/accuracy", "train/loss", "eval/macro_f1"
TRAINABLE, TOTAL, TRAINABLE_PCT = "params/trainable", "params/total", "params/trainable_pct"
TRAIN_S, SPEED, PEAK_MB = "time/train_s", "throughput/train_samples_per_s", "memory/peak_mb"
ADAPTER_BYTES = "adapter/bytes"  # not logged by ptexp yet: shown when present, "n/a" otherwise, never warned about
EXPECTED = (ACCURACY, F1, LOSS, TRAINABLE, TOTAL, TRAINABLE_PCT, TRAIN_S, SPEED, PEAK_MB)
NA, DASH = "n/a", "—"
PLOTS = (
    "accuracy_vs_step.png",
    "loss_vs_step.png",
    "accuracy_vs_trainable_fraction.png",
    "accuracy_vs_prefix_length.png",
)


class ReportError(Exception):
    """Ends the report with one message and an exit status (1: nothing to report, 2: usage or store error)."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------------------------------------------
# Reading MLflow


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
class Selection:
    description: str  # for people: "sweep 'sweep 18-02-49' (1eaf...)"
    slug: str  # for the default output folder
    parent: Any = None  # the sweep's parent Run, if the selection is a sweep
    runs: list[RunData] = field(default_factory=list)


def default_tracking_uri(output_root: str) -> str:
    """As ptexp.tracking.tracking_uri with tracking.uri unset."""
    return f"sqlite:///{Path(output_root).resolve() / 'mlflow.db'}"


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:300]


def connect(uri: str, experiment: str):
    """(client, experiment_id); ReportError(status 2) for a missing or unreachable store or an unknown experiment."""
    local = None
    if uri.startswith("sqlite:///"):
        local = Path(uri[len("sqlite:///") :])
    elif uri.startswith("file:"):
        local = Path(uri[len("file://") :] if uri.startswith("file://") else uri[len("file:") :])
    elif "://" not in uri:
        local = Path(uri)
    if local is not None and not local.exists():
        raise ReportError(
            f"no MLflow store at {local} ({uri}); run an experiment first (python -m ptexp ...) "
            "or point --output-root / --tracking-uri at an existing store"
        )
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(experiment)
        names = [] if found else [e.name for e in client.search_experiments()]
    except Exception as err:
        raise ReportError(f"cannot read the MLflow store {uri!r}: {first_line(err)}") from None
    if found is None:
        raise ReportError(
            f"experiment {experiment!r} not found in {uri}; valid: {', '.join(sorted(names)) or 'none there yet'}"
        )
    return client, found.experiment_id


def search_all(client, experiment_id: str, filter_string: str = "", order_by: list[str] | None = None) -> list:
    runs, token = [], None
    while True:
        try:
            page = client.search_runs(
                [experiment_id], filter_string=filter_string, max_results=1000, order_by=order_by, page_token=token
            )
        except Exception as err:
            raise ReportError(f"MLflow search failed for filter {filter_string!r}: {first_line(err)}") from None
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def run_data(run) -> RunData:
    tags, params = run.data.tags, run.data.params
    raw_length = params.get("prefix_length", "None")
    try:
        prefix_length = None if raw_length in ("None", "", "null") else int(raw_length)
    except ValueError:
        prefix_length = None
    return RunData(
        run_id=run.info.run_id,
        name=run.info.run_name or run.info.run_id,
        status=run.info.status,
        method=tags.get("ptexp.method") or params.get("method.name") or "unknown",
        model=tags.get("ptexp.model") or params.get("model.name") or "unknown",
        data=tags.get("ptexp.data") or params.get("data.name") or "unknown",
        prefix_length=prefix_length,
        seed=params.get("seed", "?"),
        metrics=dict(run.data.metrics),
        error=tags.get("ptexp.error", ""),
        params=dict(params),
    )


def history(client, run_id: str, key: str) -> dict[int, float]:
    """step -> value; where a step was logged twice, the later value wins."""
    points = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return {m.step: m.value for m in points}


def select(client, experiment_id: str, args: argparse.Namespace) -> Selection:
    parent = None
    if args.sweep:
        try:
            parent = client.get_run(args.sweep)
        except Exception as err:
            raise ReportError(f"--sweep: no run {args.sweep!r} in the store: {first_line(err)}") from None
        if parent.info.experiment_id != experiment_id:
            raise ReportError(f"--sweep: run {args.sweep} belongs to another experiment than {args.experiment!r}")
    elif not (args.all or args.filter):  # --latest-sweep, also the default
        parents = client.search_runs(
            [experiment_id], filter_string="tags.ptexp.sweep = 'parent'", max_results=1, order_by=["start_time DESC"]
        )
        if not parents:
            raise ReportError(
                f"no sweep in experiment {args.experiment!r} yet (run python -m ptexp -m ...); "
                "use --all or --filter to report single runs",
                status=1,
            )
        parent = parents[0]

    clauses, parts, slug_parts = [], [], []
    if parent is not None:
        clauses.append(f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
        when = time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(parent.info.start_time / 1000))
        parts.append(f"sweep {parent.info.run_name!r} ({parent.info.run_id})")
        slug_parts.append(f"sweep_{when}_{parent.info.run_id[:8]}")
    if args.filter:
        clauses.append(args.filter)
        parts.append(f"filter {args.filter!r}")
        slug_parts.append("filter_" + hashlib.sha1(args.filter.encode()).hexdigest()[:8])
    if not clauses:
        parts.append("every run")
        slug_parts.append("all_runs")
    runs = search_all(client, experiment_id, " and ".join(clauses))  # MLflow filters know AND only
    jobs = [run_data(r) for r in runs if r.data.tags.get("ptexp.sweep") != "parent"]
    jobs.sort(key=lambda r: (r.method, r.model, r.data, r.prefix_length or -1, r.seed, r.name))
    return Selection(" + ".join(parts), "_".join(slug_parts), parent, jobs)


# ---------------------------------------------------------------------------------------------------------------
# Aggregation


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


# ---------------------------------------------------------------------------------------------------------------
# The summary table


def fmt(value: float | None, spec: str) -> str:
    return NA if value is None else format(value, spec)


def fmt_pm(stat: Stat, spec: str = ".4f") -> str:
    if stat.mean is None:
        return NA
    return f"{stat.mean:{spec}} ± {DASH if stat.std is None else format(stat.std, spec)}"


def fmt_bytes(value: float | None) -> str:
    if value is None:
        return NA
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def fmt_pct(value: float | None) -> str:
    if value is None:
        return NA
    return f"{value:.1f}%" if value >= 10 else f"{value:.3g}%"


HEADERS = (
    "method",
    "model",
    "data",
    "prefix_length",
    "seeds",
    "trainable params",
    "trainable %",
    "final accuracy",
    "best accuracy",
    "macro-F1",
    "train s",
    "samples/s",
    "peak MB",
    "adapter size",
)
NUMERIC = set(HEADERS[4:])


def display_row(g: Group) -> list[str]:
    trainable = g.metric(TRAINABLE).mean
    return [
        g.method,
        g.model,
        g.data,
        DASH if g.prefix_length is None else str(g.prefix_length),
        str(len(g.runs)),
        NA if trainable is None else f"{trainable:,.0f}",
        fmt_pct(g.metric(TRAINABLE_PCT).mean),
        fmt_pm(g.final_accuracy),
        fmt_pm(g.best_accuracy),
        fmt_pm(g.metric(F1)),
        fmt(g.metric(TRAIN_S).mean, ".1f"),
        fmt(g.metric(SPEED).mean, ".1f"),
        fmt(g.metric(PEAK_MB).mean, ".0f"),
        fmt_bytes(g.metric(ADAPTER_BYTES).mean),
    ]


CSV_HEADERS = (
    "method",
    "model",
    "data",
    "prefix_length",
    "seeds",
    "seed_values",
    "trainable_params",
    "total_params",
    "trainable_pct",
    "final_accuracy_mean",
    "final_accuracy_std",
    "best_accuracy_mean",
    "best_accuracy_std",
    "macro_f1_mean",
    "macro_f1_std",
    "train_s_mean",
    "samples_per_s_mean",
    "peak_memory_mb_mean",
    "adapter_bytes",
    "run_ids",
)


def csv_row(g: Group) -> list[Any]:
    def num(value: float | None) -> Any:
        return NA if value is None else value

    def pair(stat: Stat) -> list[Any]:  # a single seed: std 0 (the text tables show "—")
        return [num(stat.mean), NA if stat.mean is None else (stat.std or 0.0)]

    return [
        g.method,
        g.model,
        g.data,
        "" if g.prefix_length is None else g.prefix_length,
        len(g.runs),
        " ".join(r.seed for r in g.runs),
        num(g.metric(TRAINABLE).mean),
        num(g.metric(TOTAL).mean),
        num(g.metric(TRAINABLE_PCT).mean),
        *pair(g.final_accuracy),
        *pair(g.best_accuracy),
        *pair(g.metric(F1)),
        num(g.metric(TRAIN_S).mean),
        num(g.metric(SPEED).mean),
        num(g.metric(PEAK_MB).mean),
        num(g.metric(ADAPTER_BYTES).mean),
        " ".join(r.run_id for r in g.runs),
    ]


def text_table(headers: list[str] | tuple[str, ...], rows: list[list[str]], right: set[str] = frozenset()) -> str:
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells) -> str:
        out = [c.rjust(w) if h in right else c.ljust(w) for c, w, h in zip(cells, widths, headers, strict=True)]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def md_table(headers, rows) -> str:
    out = ["| " + " | ".join(md_cell(h) for h in headers) + " |"]
    out.append("|" + "|".join("---:" if h in NUMERIC else "---" for h in headers) + "|")
    out += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


FAILED_HEADERS = ("run", "id", "status", "error")


def failed_rows(runs: list[RunData], limit: int | None = 200) -> list[list[str]]:
    def short(text: str) -> str:
        text = " ".join(text.split())
        return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"

    return [[r.name, r.run_id, r.status, short(r.error) or DASH] for r in runs]


# ---------------------------------------------------------------------------------------------------------------
# Plots


def aligned(runs: list[RunData], key: str) -> tuple[list[int], list[float], list[float | None]]:
    """Steps every run logged ``key`` at, with the mean and the sample std (None for one run) there."""
    series = [r.histories[key] for r in runs if r.histories.get(key)]
    if not series:
        return [], [], []
    steps = sorted(set.intersection(*(set(s) for s in series)))
    means = [statistics.fmean(s[step] for s in series) for step in steps]
    stds = [statistics.stdev(s[step] for s in series) if len(series) > 1 else None for step in steps]
    return steps, means, stds


def new_figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.2), dpi=120)
    ax.grid(True, alpha=0.3)
    return plt, fig, ax


def save(plt, fig, ax, path: Path) -> None:
    """Legend outside the axes on the right, so it never hides a curve, an error bar or a band."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    fig.savefig(path, format="png", bbox_inches="tight")
    plt.close(fig)


def styles(groups: list[Group]) -> dict[str, dict[str, Any]]:
    """One colour, marker and line style per group, the same in every plot; identical curves stay visible."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10"] if len(groups) <= 10 else matplotlib.colormaps["tab20"]
    markers, lines = "osD^vP*X", ["-", "--", "-.", ":"]
    return {
        g.label: {"color": cmap(i % cmap.N), "marker": markers[i % len(markers)], "linestyle": lines[i % len(lines)]}
        for i, g in enumerate(groups)
    }


def plot_curves(groups: list[Group], key: str, ylabel: str, title: str, path: Path, warnings: list[str]) -> None:
    from matplotlib.ticker import MaxNLocator

    plt, fig, ax = new_figure()
    look = styles(groups)
    alpha = 0.15 if len(groups) <= 3 else 0.07
    for g in groups:
        steps, means, stds = aligned(g.runs, key)
        if not steps:
            if any(r.histories.get(key) for r in g.runs):
                warnings.append(f"{path.name}: the seeds of {g.label} share no step of {key}; left out")
            continue
        n = sum(1 for r in g.runs if r.histories.get(key))
        style = look[g.label]
        ax.plot(steps, means, markersize=4.5, linewidth=1.8, label=f"{g.label} (n={n} seeds)", **style)
        if n > 1:  # the band: light fill plus thin edges in the group's colour, readable where bands overlap
            low = [m - s for m, s in zip(means, stds, strict=True)]
            high = [m + s for m, s in zip(means, stds, strict=True)]
            ax.fill_between(steps, low, high, color=style["color"], alpha=alpha, linewidth=0)
            for edge in (low, high):
                ax.plot(steps, edge, color=style["color"], linewidth=0.6, alpha=0.6, linestyle=style["linestyle"])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    save(plt, fig, ax, path)


def percent_formatter():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda x, _pos: f"{100 * x:.3g}%")


def plot_fraction(groups: list[Group], path: Path, warnings: list[str]) -> None:
    plt, fig, ax = new_figure()
    look = styles(groups)
    xs = []
    for i, g in enumerate(groups):
        x, acc = g.trainable_fraction.mean, g.final_accuracy
        if x is None or x <= 0 or acc.mean is None:
            warnings.append(f"{path.name}: {g.label} has no trainable fraction or final accuracy; left out")
            continue
        xs.append(x)
        ax.errorbar(
            [x],
            [acc.mean],
            yerr=[[acc.std or 0.0], [acc.std or 0.0]],
            fmt=look[g.label]["marker"],
            markersize=8,
            capsize=5,
            color=look[g.label]["color"],
            label=f"{g.label} (n={acc.n} seeds)",
        )
        # Labels alternate above and below their point, so neighbours on the log axis do not overprint.
        above = i % 2 == 0
        ax.annotate(
            g.label,
            (x, acc.mean),
            textcoords="offset points",
            xytext=(7, 7 if above else -7),
            va="bottom" if above else "top",
            fontsize=9,
        )
    ax.set_xscale("log")
    if xs:
        ax.set_xlim(min(xs) / 3, min(max(xs) * 3, 3.0))
    ax.xaxis.set_major_formatter(percent_formatter())
    ax.set_xlabel("trainable parameters, % of total (log scale)")
    ax.set_ylabel("final eval accuracy (mean ± std over seeds)")
    ax.set_title("Final accuracy vs trainable-parameter fraction")
    save(plt, fig, ax, path)


def prefix_families(groups: list[Group]) -> dict[tuple[str, str, str], list[Group]]:
    """(method, model, data) -> its groups, for methods with more than one prefix_length in the selection."""
    families: dict[tuple[str, str, str], list[Group]] = {}
    for g in groups:
        if g.prefix_length is not None:
            families.setdefault((g.method, g.model, g.data), []).append(g)
    return {k: sorted(v, key=lambda g: g.prefix_length) for k, v in families.items() if len(v) > 1}


def plot_prefix_length(groups: list[Group], families: dict, path: Path) -> None:
    plt, fig, ax = new_figure()
    several = len(families) > 1
    lengths = sorted({g.prefix_length for fam in families.values() for g in fam})
    for i, ((method, model, data), fam) in enumerate(families.items()):
        points = [(g.prefix_length, g.final_accuracy) for g in fam if g.final_accuracy.mean is not None]
        label = f"{method} ({model}, {data})" if several else method
        ax.errorbar(
            [p for p, _ in points],
            [s.mean for _, s in points],
            yerr=[s.std or 0.0 for _, s in points],
            fmt="-o",
            markersize=6,
            capsize=4,
            color=f"C{i}",
            label=f"{label}, final accuracy",
        )
        for g in groups:  # reference: methods without a prefix on the same model and data, e.g. full fine-tuning
            if g.prefix_length is None and (g.model, g.data) == (model, data) and g.final_accuracy.mean is not None:
                ax.axhline(
                    g.final_accuracy.mean,
                    linestyle="--",
                    linewidth=1.2,
                    color="0.35",
                    label=f"{g.method} ({model}, {data}): {g.final_accuracy.mean:.3f}"
                    if several
                    else f"{g.method} (reference): {g.final_accuracy.mean:.3f}",
                )
    if min(lengths) > 0:
        ax.set_xscale("log")
    else:
        ax.set_xscale("symlog", linthresh=1)
    from matplotlib.ticker import FixedLocator, NullLocator

    ax.xaxis.set_major_locator(FixedLocator(lengths))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(p) for p in lengths])
    ax.set_xlabel("prefix length P (vectors per layer, log scale)")
    ax.set_ylabel("final eval accuracy (mean ± std over seeds)")
    ax.set_title("Final accuracy vs prefix length")
    save(plt, fig, ax, path)


def make_plots(groups: list[Group], out: Path, warnings: list[str]) -> list[Path]:
    paths = [out / name for name in PLOTS[:3]]
    plot_curves(
        groups,
        ACCURACY,
        "eval accuracy",
        "Eval accuracy vs step (mean ± std over seeds)",
        paths[0],
        warnings,
    )
    plot_curves(
        groups,
        LOSS,
        "train loss (mean over the logging window)",
        "Train loss vs step (mean ± std over seeds)",
        paths[1],
        warnings,
    )
    plot_fraction(groups, paths[2], warnings)
    families = prefix_families(groups)
    stale = out / PLOTS[3]
    if families:
        plot_prefix_length(groups, families, stale)
        paths.append(stale)
    elif stale.exists():  # from an earlier report into the same folder
        stale.unlink()
    return paths


# ---------------------------------------------------------------------------------------------------------------
# Writing


CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 2rem auto;
       max-width: 1200px; padding: 0 1rem; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
.meta { color: #555; font-size: .9rem; } .meta code { font-size: .85rem; }
table { border-collapse: collapse; font-size: .88rem; margin: .5rem 0; }
th, td { border: 1px solid #d0d4da; padding: .3rem .55rem; white-space: nowrap; }
th { background: #f0f2f5; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #fafbfc; }
table#failed td:last-child { white-space: normal; max-width: 40rem; font-family: monospace; font-size: .8rem; }
.note { color: #555; font-size: .85rem; } .warn { color: #8a5300; }
figure { margin: 1.2rem 0; } figure img { max-width: 100%; border: 1px solid #e3e5e8; }
figcaption { color: #555; font-size: .85rem; }
"""

CAPTIONS = {
    "accuracy_vs_step.png": "Eval accuracy against optimizer step: mean over seeds on the steps they share, "
    "band = ± sample std.",
    "loss_vs_step.png": "Train loss (mean over each logging window) against step: mean over seeds, band = ± std.",
    "accuracy_vs_trainable_fraction.png": "Final eval accuracy against the share of parameters that train "
    "(log scale); error bars = ± std over seeds.",
    "accuracy_vs_prefix_length.png": "Final eval accuracy against the prefix length P; dashed: methods "
    "without a prefix on the same model and data.",
}
NOTE = (
    "Mean ± sample standard deviation (ddof=1) over the finished runs (seeds) of each group; "
    f"{DASH} where there is one seed. Final accuracy = the last logged eval/accuracy; best = the maximum over "
    f"the run's eval/accuracy history. {NA} = not logged. Failed, killed and unfinished runs are not averaged in."
)


def write_html(path: Path, title: str, meta: list[tuple[str, str]], groups, failed, warnings, plots) -> None:
    e = html.escape

    def table(table_id: str, headers, rows, numeric=frozenset()) -> str:
        head = "".join(f"<th>{e(h)}</th>" for h in headers)
        body = "\n".join(
            "<tr>"
            + "".join(
                f'<td class="num">{e(c)}</td>' if h in numeric else f"<td>{e(c)}</td>"
                for h, c in zip(headers, row, strict=True)
            )
            + "</tr>"
            for row in rows
        )
        return f'<table id="{table_id}">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>'

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        '<p class="meta">' + "<br>".join(f"{e(k)}: <code>{e(v)}</code>" for k, v in meta) + "</p>",
        "<h2>Summary</h2>",
        table("summary", HEADERS, [display_row(g) for g in groups], NUMERIC),
        f'<p class="note">{e(NOTE)}</p>',
        f"<h2>Failed, killed and unfinished runs ({len(failed)})</h2>",
        table("failed", FAILED_HEADERS, failed_rows(failed, limit=2000))
        if failed
        else "<p>None: every selected run finished.</p>",
    ]
    if warnings:
        parts += ["<h2>Warnings</h2>", "<ul>", *(f'<li class="warn">{e(w)}</li>' for w in warnings), "</ul>"]
    parts.append("<h2>Plots</h2>")
    for plot in plots:
        data = base64.b64encode(plot.read_bytes()).decode("ascii")
        parts.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{e(plot.stem)}">'
            f"<figcaption>{e(plot.name)}: {e(CAPTIONS.get(plot.name, ''))}</figcaption></figure>"
        )
    parts.append("</body></html>")
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")


def write_md(path: Path, title: str, meta, groups, failed, warnings, plots) -> None:
    lines = [f"# {title}", "", *(f"- {k}: `{v}`" for k, v in meta), "", "## Summary", ""]
    lines += [md_table(HEADERS, [display_row(g) for g in groups]), "", NOTE, ""]
    lines += [f"## Failed, killed and unfinished runs ({len(failed)})", ""]
    lines += [md_table(FAILED_HEADERS, failed_rows(failed, limit=500)) if failed else "None.", ""]
    if warnings:
        lines += ["## Warnings", "", *(f"- {md_cell(w)}" for w in warnings), ""]
    lines += ["## Plots", ""]
    for plot in plots:
        lines += [f"![{plot.stem}]({plot.name})", "", CAPTIONS.get(plot.name, ""), ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def write_csv(path: Path, groups: list[Group]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_HEADERS)
        writer.writerows(csv_row(g) for g in groups)


# ---------------------------------------------------------------------------------------------------------------
# The command


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ptexp.report",
        description="Side-by-side report (table, CSV, Markdown, self-contained HTML, PNG plots) of ptexp runs "
        "in MLflow, grouped by method, model, data and prefix_length, averaged over seeds.",
    )
    parser.add_argument("--output-root", default="outputs", help="ptexp's output_root (default: %(default)s)")
    parser.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: sqlite:///<abs --output-root>/mlflow.db, as ptexp)"
    )
    parser.add_argument("--experiment", default="ptexp", help="MLflow experiment name (default: %(default)s)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--sweep", metavar="PARENT_RUN_ID", help="the children of this sweep parent run")
    which.add_argument(
        "--latest-sweep", action="store_true", help="the most recent sweep (the default when no selection is given)"
    )
    which.add_argument("--all", action="store_true", help="every run of the experiment")
    parser.add_argument(
        "--filter",
        metavar="FILTER",
        help="MLflow search filter, e.g. \"tags.ptexp.method = 'prefix'\"; alone: over the whole experiment; "
        "with --sweep/--latest-sweep: within that sweep",
    )
    parser.add_argument("--out", type=Path, help="output folder (default: <output-root>/reports/<selection>)")
    parser.add_argument("--no-attach", action="store_true", help="do not log the report to the sweep's parent run")
    return parser.parse_args(argv)


def report(args: argparse.Namespace) -> int:
    uri = args.tracking_uri or default_tracking_uri(args.output_root)
    client, experiment_id = connect(uri, args.experiment)
    selection = select(client, experiment_id, args)
    if not selection.runs:
        raise ReportError(
            f"nothing to report: {selection.description} matched no run in experiment {args.experiment!r} ({uri})",
            status=1,
        )
    finished = [r for r in selection.runs if r.status == FINISHED]
    failed = [r for r in selection.runs if r.status != FINISHED]
    print(f"[report] {selection.description}: {len(finished)} finished run(s), {len(failed)} not finished; {uri}")
    if failed:
        print(f"\nNot finished, not averaged in ({len(failed)}):")
        print(text_table(FAILED_HEADERS, failed_rows(failed, limit=160)))
    if not finished:
        raise ReportError("nothing to report: no finished run in the selection", status=1)

    for run in finished:
        run.histories = {key: history(client, run.run_id, key) for key in (ACCURACY, LOSS)}
    groups = make_groups(finished)
    warnings = check_runs(groups)

    out = args.out or Path(args.output_root) / "reports" / selection.slug
    out.mkdir(parents=True, exist_ok=True)
    plots = make_plots(groups, out, warnings)
    title = f"ptexp report: {selection.description}"
    meta = [("selection", selection.description), ("experiment", args.experiment), ("tracking URI", uri)]
    if selection.parent is not None and selection.parent.data.tags.get("ptexp.overrides") is not None:
        meta.append(("sweep command", f"python -m ptexp -m {selection.parent.data.tags['ptexp.overrides']}"))
    meta.append(("generated", time.strftime("%Y-%m-%d %H:%M:%S")))
    files = [out / "report.md", out / "report.csv", out / "report.html"]
    write_md(files[0], title, meta, groups, failed, warnings, plots)
    write_csv(files[1], groups)
    write_html(files[2], title, meta, groups, failed, warnings, plots)

    print(f"\n{len(groups)} group(s); mean ± sample std over seeds ({DASH}: one seed; {NA}: not logged):\n")
    print(text_table(HEADERS, [display_row(g) for g in groups], NUMERIC))
    sys.stdout.flush()  # the warnings (stderr) after the table, also when both go to one terminal
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    print(f"\nwrote {out.resolve()}/: {', '.join(p.name for p in files + plots)}")

    if selection.parent is not None and not args.no_attach:
        parent_id = selection.parent.info.run_id
        try:
            for path in files + plots:
                client.log_artifact(parent_id, str(path), artifact_path="report")
        except Exception as err:
            print(f"warning: could not attach the report to run {parent_id}: {first_line(err)}", file=sys.stderr)
        else:
            names = ", ".join(f"report/{p.name}" for p in files + plots)
            print(f"attached to sweep parent run {parent_id}: {names}")
    elif selection.parent is None and not args.no_attach:
        print("not attached: the selection is not a sweep (attach needs --sweep or --latest-sweep)")
    return 0


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        status = report(args)
    except ReportError as err:
        print(f"error: {err}" if err.status == 2 else str(err), file=sys.stderr)
        status = err.status
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        status = 130
    sys.exit(status)


if __name__ == "__main__":
    main()

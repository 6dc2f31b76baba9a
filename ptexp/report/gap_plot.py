"""The task view's plots: the gap to full fine-tuning by task (a bar per method), by model size (a line per
(task, method)) and by train rows (a line per (task, model, method): a data-size curve), each gap with its 95 %
interval where it has one; matplotlib."""

from __future__ import annotations

from pathlib import Path

from ptexp.report.plots import new_figure, save
from ptexp.report.stats import rows_label
from ptexp.report.tasks import TaskRow, fmt_count

GAP_PLOT = "gap_to_full_by_task.png"


def plot_gap(rows: list[TaskRow], out: Path, warnings: list[str]) -> list[Path]:
    """Grouped bars (x: task, a bar per method, y: gap to full in points, 0 line), each with its 95 % interval as
    an error bar where it has one; [] when there is no gap."""
    path = out / GAP_PLOT
    bars = [r for r in rows if r.full is not None and r.full is not r.group and r.gap is not None]
    for r in bars:
        if r.unit != "points":
            warnings.append(f"{GAP_PLOT}: {r.method} on {r.group.task} ({r.group.primary}) is not in points; left out")
    bars = [r for r in bars if r.unit == "points"]
    if not bars:
        return removed(path)
    several_models = len({r.group.model for r in rows}) > 1
    task_names = list(dict.fromkeys(task_label(r, several_models) for r in bars))
    methods = list(dict.fromkeys(r.method for r in bars))
    width = min(0.8 / len(methods), 0.3)
    plt, fig, ax = new_figure()
    for i, method in enumerate(methods):
        mine = {task_label(r, several_models): r for r in bars if r.method == method}
        xs = [t for t, name in enumerate(task_names) if name in mine]
        gaps = [mine[task_names[t]].gap for t in xs]
        offset = (i - (len(methods) - 1) / 2) * width
        ax.bar([x + offset for x in xs], gaps, width=width * 0.95, color=f"C{i % 10}", label=method)
        bounded = [(x, mine[task_names[x]]) for x in xs if mine[task_names[x]].interval is not None]
        if bounded:
            below = [max(r.gap - r.interval.low, 0.0) for _, r in bounded]
            above = [max(r.interval.high - r.gap, 0.0) for _, r in bounded]
            at = [x + offset for x, _ in bounded]
            ax.errorbar(at, [r.gap for _, r in bounded], yerr=[below, above], fmt="none", ecolor="0.15", capsize=3)
    ax.axhline(0.0, color="0.2", linewidth=1.0)
    ax.margins(y=0.1)  # the 0 line stays inside the axes when every gap has one sign
    ax.set_xticks(range(len(task_names)))
    ax.set_xticklabels(task_names)
    ax.set_xlabel("task (primary metric)")
    ax.set_ylabel("gap to full fine-tuning (points, mean over seeds)")
    ax.set_title("Gap to full fine-tuning by task")
    save(plt, fig, ax, path)
    return [path]


def task_label(row: TaskRow, with_model: bool) -> str:
    g = row.group
    return f"{g.task} ({g.primary})" if not with_model else f"{g.task} ({g.primary}, {g.model})"


SIZE_PLOT = "gap_to_full_by_model_size.png"
ROWS_PLOT = "gap_to_full_by_train_rows.png"
Series = dict[tuple[str, ...], list[tuple[float, TaskRow]]]  # line -> [(x, its task row), ...] by x
DODGE = 0.012  # decades between neighbouring lines' points at one x


def gap_series(rows: list[TaskRow], line_of, x_of) -> Series:
    """line -> [(x, row), ...] by x, for each row with a gap in points to a full group other than itself and an x
    (``x_of(row)`` not None); metrics outside [-1, 1] are left out."""
    series: Series = {}
    for r in rows:
        if r.full is None or r.full is r.group or r.gap is None or r.unit != "points" or x_of(r) is None:
            continue
        series.setdefault(line_of(r), []).append((x_of(r), r))
    return {key: sorted(points, key=lambda p: p[0]) for key, points in series.items()}


def gap_by_size(rows: list[TaskRow]) -> dict[tuple[str, ...], list[tuple[float, float]]]:
    """(task, method) -> [(model size, gap to full in points), ...] by size: each method's gap on each model that
    has a full fine-tuning group with ``params/total`` on that task."""
    series = gap_series(rows, lambda r: (r.group.task, r.method), lambda r: r.model_size)
    return {key: [(x, r.gap) for x, r in points] for key, points in series.items()}


def train_rows_of(row: TaskRow) -> float | None:
    """The rows full fine-tuning trained on (``data/train_rows``, mean over its runs); else the cap."""
    logged = row.full.metric("data/train_rows").mean if row.full is not None else None
    return logged if logged is not None else row.group.train_rows


def size_warnings(rows: list[TaskRow]) -> list[str]:
    """What the size plot leaves out: a (task, model) without full fine-tuning or its size, a task not in points."""
    warnings = []
    for task, model in dict.fromkeys((r.group.task, r.group.model) for r in rows):
        mine = [r for r in rows if (r.group.task, r.group.model) == (task, model)]
        if mine[0].full is None:
            warnings.append(f"{SIZE_PLOT}: no full fine-tuning group for {task} on {model}; left out")
        elif mine[0].model_size is None:
            warnings.append(f"{SIZE_PLOT}: full fine-tuning of {task} on {model} has no params/total; left out")
        elif mine[0].unit != "points":
            warnings.append(f"{SIZE_PLOT}: {task} on {model} ({mine[0].group.primary}) is not in points; left out")
    return warnings


def draw_lines(series: Series, labels: dict[tuple[str, ...], str]):
    """A line per series (colour per method: the key's last item; marker and style per the rest), each point's
    95 % interval as an error bar, a 0 line; log x, each line shifted by DODGE of a decade from the next, so that
    the intervals at one x do not hide each other (the ticks stay at the true x). Returns (plt, fig, ax)."""
    plt, fig, ax = new_figure()
    methods = list(dict.fromkeys(key[-1] for key in series))
    others = list(dict.fromkeys(key[:-1] for key in series))
    for n, (key, points) in enumerate(series.items()):
        t, color = others.index(key[:-1]), f"C{methods.index(key[-1]) % 10}"
        shift = 10 ** ((n - (len(series) - 1) / 2) * DODGE)
        points = [(x * shift, r) for x, r in points]
        xs, gaps = [x for x, _ in points], [r.gap for _, r in points]
        ax.plot(xs, gaps, color=color, marker="osD^vP*X"[t % 8], linestyle=["-", "--", "-.", ":"][t % 4],
                markersize=7, linewidth=1.8, label=labels[key])  # fmt: skip
        bounded = [(x, r) for x, r in points if r.interval is not None]
        if bounded:
            below = [max(r.gap - r.interval.low, 0.0) for _, r in bounded]
            above = [max(r.interval.high - r.gap, 0.0) for _, r in bounded]
            ax.errorbar([x for x, _ in bounded], [r.gap for _, r in bounded], yerr=[below, above], fmt="none",
                        ecolor=color, alpha=0.6, capsize=3)  # fmt: skip
    ax.axhline(0.0, color="0.2", linewidth=1.0)
    ax.margins(x=0.15, y=0.1)
    ax.set_xscale("log")
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel("gap to full fine-tuning (points, mean over seeds; bars: 95% interval)")
    return plt, fig, ax


def plot_gap_by_size(rows: list[TaskRow], out: Path, warnings: list[str]) -> list[Path]:
    """Gap to full against model size (log x, a tick per model), a line per (task, method); drawn when the gaps
    cover at least two models, else [] (and an earlier report's file is removed)."""
    path = out / SIZE_PLOT
    series = gap_series(rows, lambda r: (r.group.task, r.method), lambda r: r.model_size)
    sizes: dict[str, list[float]] = {}  # model -> its sizes (one per task: the heads differ)
    for points in series.values():
        for size, r in points:
            sizes.setdefault(r.group.model, []).append(size)
    if len(sizes) < 2:
        return removed(path)
    warnings.extend(size_warnings(rows))
    plt, fig, ax = draw_lines(series, {key: f"{key[1]} on {key[0]}" for key in series})
    ticks = sorted((sum(v) / len(v), model) for model, v in sizes.items())
    ax.set_xticks([size for size, _ in ticks], [f"{model}\n{fmt_count(size)}" for size, model in ticks])
    ax.set_xlabel("model size (total parameters, log scale)")
    ax.set_title("Gap to full fine-tuning by model size")
    save(plt, fig, ax, path)
    return [path]


def plot_gap_by_rows(rows: list[TaskRow], out: Path) -> list[Path]:
    """Gap to full against the train rows (log x, a tick per row count), a line per (task, model, method): the
    data-size curve; drawn when a line has at least two row counts, else [] (an earlier report's file removed)."""
    path = out / ROWS_PLOT
    series = gap_series(rows, lambda r: (r.group.data, r.group.model, r.method), train_rows_of)
    if not any(len({x for x, _ in points}) > 1 for points in series.values()):
        return removed(path)
    several_models = len({key[1] for key in series}) > 1
    labels = {k: f"{k[2]} on {k[0]}" + (f" ({k[1]})" if several_models else "") for k in series}
    plt, fig, ax = draw_lines(series, labels)
    counts = sorted({x for points in series.values() for x, _ in points})
    ax.set_xticks(counts, [rows_label(round(x)).removesuffix(" rows") for x in counts])
    ax.set_xlabel("train rows (log scale)")
    ax.set_title("Gap to full fine-tuning by train rows")
    save(plt, fig, ax, path)
    return [path]


def removed(path: Path) -> list[Path]:
    """No plot: [], and an earlier report's file of that name in the same folder is removed."""
    if path.exists():
        path.unlink()
    return []

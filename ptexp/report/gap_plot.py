"""The task view's plots: the gap to full fine-tuning by task (a bar per method) and by model size (a line per
(task, method)), matplotlib."""

from __future__ import annotations

from pathlib import Path

from ptexp.report.plots import new_figure, save
from ptexp.report.tasks import TaskRow, fmt_count

GAP_PLOT = "gap_to_full_by_task.png"


def plot_gap(rows: list[TaskRow], out: Path, warnings: list[str]) -> list[Path]:
    """Grouped bars (x: task, a bar per method, y: gap to full in points, 0 line), each with its 95 % interval as
    an error bar where it has one; [] when there is no gap."""
    path = out / GAP_PLOT
    bars = [r for r in rows if r.full is not None and r.full is not r.group and r.gap is not None]
    for r in bars:
        if r.unit != "points":
            warnings.append(f"{GAP_PLOT}: {r.method} on {r.group.data} ({r.group.primary}) is not in points; left out")
    bars = [r for r in bars if r.unit == "points"]
    if not bars:
        if path.exists():  # from an earlier report into the same folder
            path.unlink()
        return []
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
    return f"{g.data} ({g.primary})" if not with_model else f"{g.data} ({g.primary}, {g.model})"


SIZE_PLOT = "gap_to_full_by_model_size.png"


def gap_by_size(rows: list[TaskRow]) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """(task, method) -> [(model size, gap to full in points), ...] by size: each method's gap on each model that
    has a full fine-tuning group with ``params/total`` on that task; metrics outside [-1, 1] are left out."""
    series: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for r in rows:
        if r.full is None or r.full is r.group or r.gap is None or r.unit != "points" or r.model_size is None:
            continue
        series.setdefault((r.group.data, r.method), []).append((r.model_size, r.gap))
    return {key: sorted(points) for key, points in series.items()}


def size_warnings(rows: list[TaskRow]) -> list[str]:
    """What the size plot leaves out: a (task, model) without full fine-tuning or its size, a task not in points."""
    warnings = []
    for task, model in dict.fromkeys((r.group.data, r.group.model) for r in rows):
        mine = [r for r in rows if (r.group.data, r.group.model) == (task, model)]
        if mine[0].full is None:
            warnings.append(f"{SIZE_PLOT}: no full fine-tuning group for {task} on {model}; left out")
        elif mine[0].model_size is None:
            warnings.append(f"{SIZE_PLOT}: full fine-tuning of {task} on {model} has no params/total; left out")
        elif mine[0].unit != "points":
            warnings.append(f"{SIZE_PLOT}: {task} on {model} ({mine[0].group.primary}) is not in points; left out")
    return warnings


def plot_gap_by_size(rows: list[TaskRow], out: Path, warnings: list[str]) -> list[Path]:
    """Gap to full against model size (log x, a tick per model), a line per (task, method), a 0 line; drawn when
    the gaps cover at least two models, else [] (and an earlier report's file is removed)."""
    path = out / SIZE_PLOT
    series = gap_by_size(rows)
    sizes: dict[str, list[float]] = {}  # model -> its sizes (one per task: the heads differ)
    for r in rows:
        if (r.group.data, r.method) in series and r.model_size is not None:
            sizes.setdefault(r.group.model, []).append(r.model_size)
    if len(sizes) < 2:
        if path.exists():
            path.unlink()
        return []
    warnings.extend(size_warnings(rows))
    tasks = list(dict.fromkeys(task for task, _ in series))
    methods = list(dict.fromkeys(method for _, method in series))
    plt, fig, ax = new_figure()
    for (task, method), points in series.items():
        t = tasks.index(task)
        ax.plot(
            [size for size, _ in points],
            [gap for _, gap in points],
            color=f"C{methods.index(method) % 10}",
            marker="osD^vP*X"[t % 8],
            linestyle=["-", "--", "-.", ":"][t % 4],
            markersize=7,
            linewidth=1.8,
            label=f"{method} on {task}",
        )
    ax.axhline(0.0, color="0.2", linewidth=1.0)
    ax.margins(x=0.15, y=0.1)
    ax.set_xscale("log")
    from matplotlib.ticker import NullFormatter

    ticks = sorted((sum(v) / len(v), model) for model, v in sizes.items())
    ax.set_xticks([size for size, _ in ticks], [f"{model}\n{fmt_count(size)}" for size, model in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("model size (total parameters, log scale)")
    ax.set_ylabel("gap to full fine-tuning (points, mean over seeds)")
    ax.set_title("Gap to full fine-tuning by model size")
    save(plt, fig, ax, path)
    return [path]

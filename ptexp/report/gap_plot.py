"""The task view's plot: the gap to full fine-tuning by task, one bar per method (matplotlib)."""

from __future__ import annotations

from pathlib import Path

from ptexp.report.plots import new_figure, save
from ptexp.report.tasks import TaskRow

GAP_PLOT = "gap_to_full_by_task.png"


def plot_gap(rows: list[TaskRow], out: Path, warnings: list[str]) -> list[Path]:
    """Grouped bars (x: task, a bar per method, y: gap to full in points, 0 line); [] when there is no gap."""
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

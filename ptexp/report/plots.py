"""The report's PNG plots: the primary metric and the loss against the step, the primary metric against the
trainable fraction and against the prefix length (matplotlib, imported here and in
:mod:`~ptexp.report.gap_plot`). The primary-metric plots need one primary metric common to all groups."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from ptexp.report.stats import LOSS, POINTS, Group, RunData, common_primary

LOSS_PLOT = "loss_vs_step.png"
METRIC_PLOTS = ("{}_vs_step.png", "{}_vs_trainable_fraction.png", "{}_vs_prefix_length.png")


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


def plot_fraction(groups: list[Group], metric: str, path: Path, warnings: list[str]) -> None:
    plt, fig, ax = new_figure()
    look = styles(groups)
    xs = []
    for i, g in enumerate(groups):
        x, acc = g.trainable_fraction.mean, g.final
        if x is None or x <= 0 or acc.mean is None:
            warnings.append(f"{path.name}: {g.label} has no trainable fraction or final eval {metric}; left out")
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
    ax.set_ylabel(f"final eval {metric} (mean ± std over seeds)")
    ax.set_title(f"Final {metric} vs trainable-parameter fraction")
    save(plt, fig, ax, path)


def prefix_families(groups: list[Group]) -> dict[tuple[str, str, str], list[Group]]:
    """(method, model, task) -> its groups, for methods with more than one prefix_length in the selection."""
    families: dict[tuple[str, str, str], list[Group]] = {}
    for g in groups:
        if g.prefix_length is not None:
            families.setdefault((g.method, g.model, g.task), []).append(g)
    return {k: sorted(v, key=lambda g: g.prefix_length) for k, v in families.items() if len(v) > 1}


def plot_prefix_length(groups: list[Group], families: dict, metric: str, path: Path) -> None:
    plt, fig, ax = new_figure()
    several = len(families) > 1
    lengths = sorted({g.prefix_length for fam in families.values() for g in fam})
    for i, ((method, model, data), fam) in enumerate(families.items()):
        points = [(g.prefix_length, g.final) for g in fam if g.final.mean is not None]
        label = f"{method} ({model}, {data})" if several else method
        ax.errorbar(
            [p for p, _ in points],
            [s.mean for _, s in points],
            yerr=[s.std or 0.0 for _, s in points],
            fmt="-o",
            markersize=6,
            capsize=4,
            color=f"C{i}",
            label=f"{label}, final {metric}",
        )
        for g in groups:  # reference: methods without a prefix on the same model and data, e.g. full fine-tuning
            reference = g.final.mean
            if g.prefix_length is None and (g.model, g.task) == (model, data) and reference is not None:
                ax.axhline(
                    reference,
                    linestyle="--",
                    linewidth=1.2,
                    color="0.35",
                    label=f"{g.method_label} ({model}, {data}): {reference:.3f}"
                    if several
                    else f"{g.method_label} (reference): {reference:.3f}",
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
    ax.set_ylabel(f"final eval {metric} (mean ± std over seeds)")
    ax.set_title(f"Final {metric} vs prefix length")
    save(plt, fig, ax, path)


def remove_stale(out: Path, keep: list[Path]) -> None:
    """Drop the metric plots an earlier report left in the same folder that this one did not draw."""
    for metric in (*POINTS, "mse"):
        for name in METRIC_PLOTS:
            path = out / name.format(metric)
            if path not in keep and path.exists():
                path.unlink()


def make_plots(groups: list[Group], out: Path, warnings: list[str]) -> list[Path]:
    """The plots drawn, in their order; the primary-metric ones only when the groups share that metric."""
    metric = common_primary(groups)
    loss = out / LOSS_PLOT
    loss_title = "Train loss vs step (mean ± std over seeds)"
    plot_curves(groups, LOSS, "train loss (mean over the logging window)", loss_title, loss, warnings)
    if metric is None:
        names = ", ".join(sorted({g.primary for g in groups}))
        warnings.append(
            f"the groups have different primary metrics ({names}): no per-step, trainable-fraction or "
            "prefix-length plot of them; see the task view and gap_to_full_by_task.png"
        )
        remove_stale(out, [])
        return [loss]
    step, fraction, length = (out / name.format(metric) for name in METRIC_PLOTS)
    title = f"Eval {metric} vs step (mean ± std over seeds)"
    plot_curves(groups, f"eval/{metric}", f"eval {metric}", title, step, warnings)
    plot_fraction(groups, metric, fraction, warnings)
    paths = [step, loss, fraction]
    families = prefix_families(groups)
    if families:
        plot_prefix_length(groups, families, metric, length)
        paths.append(length)
    remove_stale(out, paths)
    return paths

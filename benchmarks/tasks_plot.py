"""The time-score curves of benchmarks/tasks.py: per task, the selection split's primary metric at each epoch end
against train seconds, for full, prefix and LoRA at their chosen learning rate (each epoch budget that was run),
with full's best as a dashed line: how far prefix and LoRA get within full's time, and whether they still rise."""

from __future__ import annotations

from pathlib import Path

COLOURS = {"full": "black", "prefix": "tab:blue", "lora": "tab:orange"}


def curves(table: dict[str, dict], chosen: dict) -> dict[str, list[tuple[str, list[float], list[float]]]]:
    """method -> [(recipe label, seconds, selection metric)]: every recipe at the chosen learning rate; an epoch
    end's seconds are its share of the steps times the recipe's mean train seconds (steps cost about the same)."""
    found: dict[str, list] = {}
    for label, row in table.items():
        method, pick = row["method"], chosen.get(row["method"])
        if pick is None or not row["selection_curve"] or f"lr {pick['lr']:g}," not in label:
            continue
        steps = [int(step) for step in row["selection_curve"]]
        seconds = [row["train_s"] * step / steps[-1] for step in steps]
        found.setdefault(method, []).append((label, seconds, list(row["selection_curve"].values())))
    return found


def time_score_plot(tables: dict[str, dict], recipes: dict, metrics: dict[str, str], path: Path) -> Path | None:
    """One panel per task (``metrics``: task -> primary metric); None when no task has a curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_task = {name: curves(table, recipes.get(name, {})) for name, table in tables.items()}
    per_task = {name: found for name, found in per_task.items() if found}
    if not per_task:
        return None
    fig, axes = plt.subplots(1, len(per_task), figsize=(4.2 * len(per_task), 4), dpi=110, squeeze=False)
    for ax, (name, found) in zip(axes[0], per_task.items(), strict=True):
        for method, lines in found.items():
            for label, seconds, values in sorted(lines, key=lambda line: len(line[1])):
                style = "-" if label == recipes[name][method]["label"] else ":"
                ax.plot(seconds, [100 * v for v in values], style, marker="o", ms=3, color=COLOURS[method],
                        label=label)  # fmt: skip
        if "full" in recipes.get(name, {}):
            ax.axhline(100 * recipes[name]["full"]["selection"], color="black", lw=0.8, ls="--")
        ax.set(title=name, xlabel="train seconds (mean over seeds)", ylabel=f"selection {metrics[name]} (x100)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Selection score at each epoch end against train time (solid: the chosen recipe)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png", bbox_inches="tight")
    plt.close(fig)
    return path

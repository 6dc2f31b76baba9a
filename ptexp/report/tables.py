"""The report's tables: the summary and the failed runs as rows, text (stdout), Markdown and CSV (the pages that
hold them: :mod:`~ptexp.report.pages`)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from ptexp.methods.base import variant_label
from ptexp.report.stats import (
    ACCURACY,
    ADAPTER_BYTES,
    DASH,
    F1,
    INFER_BATCH,
    INFER_MS,
    MERGED_MS,
    NA,
    PEAK_MB,
    SPEED,
    TOTAL,
    TRAIN_S,
    TRAINABLE,
    TRAINABLE_PCT,
    Group,
    RunData,
    Stat,
)


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
    "variant",
    "seeds",
    "trainable params",
    "trainable %",
    "metric",
    "final eval",
    "selected on selection split",
    "selection score",
    "best on eval (optimistic)",
    "accuracy",
    "macro-F1",
    "train s",
    "samples/s",
    "peak MB",
    "infer ms/example",
    "merged ms/example",
    "adapter size",
)
NUMERIC = set(HEADERS[4:]) - {"metric"}


def display_row(g: Group) -> list[str]:
    trainable = g.metric(TRAINABLE).mean
    return [
        g.method,
        g.model,
        g.task,
        variant_label(g.variant) or DASH,
        str(len(g.runs)),
        NA if trainable is None else f"{trainable:,.0f}",
        fmt_pct(g.metric(TRAINABLE_PCT).mean),
        g.primary,
        fmt_pm(g.final),
        fmt_pm(g.selected),
        fmt_pm(g.selection_score),
        fmt_pm(g.best_on_eval),
        fmt_pm(g.metric(ACCURACY)),
        fmt_pm(g.metric(F1)),
        fmt(g.metric(TRAIN_S).mean, ".1f"),
        fmt(g.metric(SPEED).mean, ".1f"),
        fmt(g.metric(PEAK_MB).mean, ".0f"),
        fmt(g.metric(INFER_MS).mean, ".3g"),
        fmt(g.metric(MERGED_MS).mean, ".3g"),
        fmt_bytes(g.metric(ADAPTER_BYTES).mean),
    ]


CSV_HEADERS = (
    "method",
    "model",
    "data",
    "train_rows",
    "variant",
    "prefix_length",
    "seeds",
    "seed_values",
    "trainable_params",
    "total_params",
    "trainable_pct",
    "primary_metric",
    "final_mean",
    "final_std",
    "selected_on_selection_mean",
    "selected_on_selection_std",
    "selection_score_mean",
    "selection_score_std",
    "best_on_eval_optimistic_mean",
    "best_on_eval_optimistic_std",
    "accuracy_mean",
    "accuracy_std",
    "macro_f1_mean",
    "macro_f1_std",
    "train_s_mean",
    "samples_per_s_mean",
    "peak_memory_mb_mean",
    "infer_batch_size",
    "infer_ms_per_example_mean",
    "merged_ms_per_example_mean",
    "adapter_bytes",
    "run_ids",
)


def num(value: float | None) -> Any:
    return NA if value is None else value


def pair(stat: Stat) -> list[Any]:
    """[mean, std] for a CSV; a single seed: std 0 (the text tables show "—")."""
    return [num(stat.mean), NA if stat.mean is None else (stat.std or 0.0)]


def csv_row(g: Group) -> list[Any]:
    return [
        g.method,
        g.model,
        g.data,
        "all" if g.train_rows is None else g.train_rows,
        variant_label(g.variant),
        "" if g.prefix_length is None else g.prefix_length,
        len(g.runs),
        " ".join(r.seed for r in g.runs),
        num(g.metric(TRAINABLE).mean),
        num(g.metric(TOTAL).mean),
        num(g.metric(TRAINABLE_PCT).mean),
        g.primary,
        *pair(g.final),
        *pair(g.selected),
        *pair(g.selection_score),
        *pair(g.best_on_eval),
        *pair(g.metric(ACCURACY)),
        *pair(g.metric(F1)),
        num(g.metric(TRAIN_S).mean),
        num(g.metric(SPEED).mean),
        num(g.metric(PEAK_MB).mean),
        num(g.metric(INFER_BATCH).mean),
        num(g.metric(INFER_MS).mean),
        num(g.metric(MERGED_MS).mean),
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


def md_table(headers, rows, numeric: set[str] = frozenset()) -> str:
    out = ["| " + " | ".join(md_cell(h) for h in headers) + " |"]
    out.append("|" + "|".join("---:" if h in numeric else "---" for h in headers) + "|")
    out += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


FAILED_HEADERS = ("run", "id", "status", "error")


def failed_rows(runs: list[RunData], limit: int | None = 200) -> list[list[str]]:
    def short(text: str) -> str:
        text = " ".join(text.split())
        return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"

    return [[r.name, r.run_id, r.status, short(r.error) or DASH] for r in runs]


def write_csv(path: Path, groups: list[Group]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_HEADERS)
        writer.writerows(csv_row(g) for g in groups)

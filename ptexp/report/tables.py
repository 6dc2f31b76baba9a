"""The report's tables: the summary and the failed runs as text (stdout), Markdown, CSV and a self-contained HTML
page (plots embedded)."""

from __future__ import annotations

import base64
import csv
import html
from pathlib import Path
from typing import Any

from ptexp.report.stats import (
    ADAPTER_BYTES,
    DASH,
    F1,
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

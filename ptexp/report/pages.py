"""The report's pages: Markdown and one self-contained HTML page (inline CSS, plots embedded as base64 PNG) with the
summary, the task view, the failed runs, the warnings and the plots."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

from ptexp.report.stats import DASH, NA, Group, RunData
from ptexp.report.tables import FAILED_HEADERS, HEADERS, NUMERIC, display_row, failed_rows, md_cell, md_table
from ptexp.report.tasks import TASK_HEADERS, TASK_NOTE, TASK_NUMERIC, TaskRow, display_task_row, fmt_study

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

CAPTIONS = {  # by the end of the file name; the metric plots start with the primary metric's name
    "loss_vs_step.png": "Train loss (mean over each logging window) against step: mean over seeds, band = ± std.",
    "_vs_step.png": "Eval value of the primary metric against optimizer step: mean over seeds on the steps they "
    "share, band = ± sample std.",
    "_vs_trainable_fraction.png": "Final eval value of the primary metric against the share of parameters that "
    "train (log scale); error bars = ± std over seeds.",
    "_vs_prefix_length.png": "Final eval value of the primary metric against the prefix length P; dashed: methods "
    "without a prefix on the same model and data.",
    "gap_to_full_by_task.png": "Gap to full fine-tuning on the same task and model, in points of each task's "
    "primary metric (mean over seeds minus full's mean); error bars = the gap's 95% interval (see the task view); "
    "0 = as good as full fine-tuning.",
    "gap_to_full_by_model_size.png": "Gap to full fine-tuning against model size (total parameters of the full "
    "fine-tuning runs, log scale), in points, one line per task and method; error bars = the gap's 95% interval; "
    "0 = as good as full fine-tuning.",
    "gap_to_full_by_train_rows.png": "Gap to full fine-tuning against the train rows (data.max_train_samples; the "
    "rows full fine-tuning trained on, log scale), in points, one line per task, model and method: the data-size "
    "curve; error bars = the gap's 95% interval; 0 = as good as full fine-tuning.",
}
NOTE = (
    "Mean ± sample standard deviation (ddof=1) over the finished runs (seeds) of each group; "
    f"{DASH} where there is one seed. metric = the group's primary metric; final eval = its last logged eval value "
    "(under trainer.select_best, that of the parameters restored from the step the selection split picked). "
    "Selected on selection split = the eval value at the step a selection split carved from train picked, and "
    "selection score = the primary metric on that selection split (both need data.selection_rows). Best on eval "
    "(optimistic) = the best value over the run's own eval history: chosen on the split it reports, so it "
    "overstates what a method would score on unseen data. Accuracy and macro-F1: final eval values (classification). "
    "Infer ms/example: the final model's forward time per example at trainer.infer_batch_size (CSV: "
    "infer_batch_size); merged: the same with the adapter folded into the weights (LoRA, IA3). "
    f"{NA} = not logged. Failed, killed and unfinished runs are not averaged in."
)


@dataclass
class Content:
    title: str
    meta: list[tuple[str, str]]
    groups: list[Group]
    failed: list[RunData]
    warnings: list[str]
    plots: list[Path]
    tasks: list[TaskRow] = field(default_factory=list)  # empty: no task view


def study_lines(tasks: list[TaskRow]) -> list[str]:
    """``task / model / method: recipe=...; budget=...; grid=...`` for each cell of a ``--study`` report."""
    return [f"{r.group.task} / {r.group.model} / {r.method}: {fmt_study(r)}" for r in tasks if r.study]


STUDY_NOTE = (
    "Each cell's choice, as the study recorded it: the chosen recipe, the budget it had to fit, and every grid "
    "recipe's selection score and train seconds."
)


def caption(name: str) -> str:
    return next((text for end, text in CAPTIONS.items() if name.endswith(end)), "")


def html_table(table_id: str, headers, rows, numeric=frozenset()) -> str:
    e = html.escape
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


def write_html(path: Path, c: Content) -> None:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(c.title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{e(c.title)}</h1>",
        '<p class="meta">' + "<br>".join(f"{e(k)}: <code>{e(v)}</code>" for k, v in c.meta) + "</p>",
        "<h2>Summary</h2>",
        html_table("summary", HEADERS, [display_row(g) for g in c.groups], NUMERIC),
        f'<p class="note">{e(NOTE)}</p>',
    ]
    if c.tasks:
        rows = [display_task_row(r) for r in c.tasks]
        parts += ["<h2>Tasks</h2>", html_table("tasks", TASK_HEADERS, rows, TASK_NUMERIC)]
        parts.append(f'<p class="note">{e(TASK_NOTE)}</p>')
        if study_lines(c.tasks):
            parts += ["<h3>Recipes</h3>", "<ul>", *(f"<li>{e(line)}</li>" for line in study_lines(c.tasks)), "</ul>"]
            parts.append(f'<p class="note">{e(STUDY_NOTE)}</p>')
    parts += [
        f"<h2>Failed, killed and unfinished runs ({len(c.failed)})</h2>",
        html_table("failed", FAILED_HEADERS, failed_rows(c.failed, limit=2000))
        if c.failed
        else "<p>None: every selected run finished.</p>",
    ]
    if c.warnings:
        parts += ["<h2>Warnings</h2>", "<ul>", *(f'<li class="warn">{e(w)}</li>' for w in c.warnings), "</ul>"]
    parts.append("<h2>Plots</h2>")
    for plot in c.plots:
        data = base64.b64encode(plot.read_bytes()).decode("ascii")
        parts.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{e(plot.stem)}">'
            f"<figcaption>{e(plot.name)}: {e(caption(plot.name))}</figcaption></figure>"
        )
    parts.append("</body></html>")
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")


def write_md(path: Path, c: Content) -> None:
    lines = [f"# {c.title}", "", *(f"- {k}: `{v}`" for k, v in c.meta), "", "## Summary", ""]
    lines += [md_table(HEADERS, [display_row(g) for g in c.groups], NUMERIC), "", NOTE, ""]
    if c.tasks:
        rows = [display_task_row(r) for r in c.tasks]
        lines += ["## Tasks", "", md_table(TASK_HEADERS, rows, TASK_NUMERIC), "", TASK_NOTE, ""]
        if study_lines(c.tasks):
            lines += ["### Recipes", "", *(f"- {md_cell(line)}" for line in study_lines(c.tasks)), "", STUDY_NOTE, ""]
    lines += [f"## Failed, killed and unfinished runs ({len(c.failed)})", ""]
    lines += [md_table(FAILED_HEADERS, failed_rows(c.failed, limit=500)) if c.failed else "None.", ""]
    if c.warnings:
        lines += ["## Warnings", "", *(f"- {md_cell(w)}" for w in c.warnings), ""]
    lines += ["## Plots", ""]
    for plot in c.plots:
        lines += [f"![{plot.stem}]({plot.name})", "", caption(plot.name), ""]
    path.write_text("\n".join(lines), encoding="utf-8")

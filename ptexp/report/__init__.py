"""Side-by-side report of ptexp runs in MLflow: ``python -m ptexp.report [--sweep ID | --all | --filter ...]``.

Reads the runs of one sweep (by default the latest), of a filter, or of the whole experiment; groups the
finished ones by (method, model, data, variant: P, LoRA's r, ...), each headlined by its task's primary metric;
and writes, under ``--out``, a summary table as ``report.md``, ``report.csv`` and a self-contained ``report.html``
(plots embedded), plus PNG plots; with several tasks or a full fine-tuning group, also a task view (``tasks.csv``: each
method's gap to full fine-tuning per task, with its 95 % interval) and ``gap_to_full_by_task.png``; with runs of
two or more models, ``gap_to_full_by_model_size.png``. Failed, killed and unfinished runs are listed apart and
never averaged in. For a sweep, the files are also logged as artifacts of its parent run under ``report/`` (unless
``--no-attach``).

The package: :mod:`~ptexp.report.runs` (MLflow -> rows), :mod:`~ptexp.report.stats` (groups, mean ± std),
:mod:`~ptexp.report.tables` (summary rows, text, CSV), :mod:`~ptexp.report.tasks` (the task view),
:mod:`~ptexp.report.intervals` (the gaps' intervals), :mod:`~ptexp.report.pages` (Markdown, HTML),
:mod:`~ptexp.report.plots` and :mod:`~ptexp.report.gap_plot`, and the command (:mod:`~ptexp.report.__main__`).

Exit status: 0 report written; 1 nothing to report (empty selection, or no finished run); 2 a usage or
store error (one line on stderr).
"""

"""Side-by-side report of ptexp runs in MLflow: ``python -m ptexp.report [--sweep ID | --all | --filter ...]``.

Reads the runs of one sweep (by default the latest), of a filter, or of the whole experiment; groups the
finished ones by (method, model, data, prefix_length); and writes, under ``--out``, a summary table as
``report.md``, ``report.csv`` and a self-contained ``report.html`` (plots embedded), plus PNG plots. Failed,
killed and unfinished runs are listed apart and never averaged in. For a sweep, the files are also logged as
artifacts of its parent run under ``report/`` (unless ``--no-attach``).

The package: :mod:`~ptexp.report.runs` (MLflow -> rows), :mod:`~ptexp.report.stats` (groups, mean ± std),
:mod:`~ptexp.report.tables` (text, Markdown, CSV, HTML), :mod:`~ptexp.report.plots` and the command
(:mod:`~ptexp.report.__main__`).

Exit status: 0 report written; 1 nothing to report (empty selection, or no finished run); 2 a usage or
store error (one line on stderr).
"""

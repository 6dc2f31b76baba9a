"""Reading labelled text files: TSV (GLUE's: a tab between fields, no quoting), CSV and JSONL (SuperGLUE's).

Handles the quirks of the files researchers have: a UTF-8 BOM before the header (MRPC), headerless files whose
columns are named by ``data.columns`` (CoLA), labels as names, integers or booleans, float scores in mixed formats.
Lines end at ``\\n`` (or ``\\r\\n``) only: U+0085, U+2028, U+2029 and form feeds are text. Refused with one line
naming the file and line: a row whose field count is not the header's (or ``data.columns``'), a JSONL text that is
not a string, a score that is not a plain decimal number or lies outside ``data.label_range``.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ptexp.errors import UserError

FILE_FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}
DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")  # a plain decimal number: no exponent, underscore, nan, inf
JSON_KINDS = {
    dict: "an object",
    list: "an array",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    type(None): "null",
}


@dataclass
class Split:
    texts: list[str]
    labels: list  # class indices (int) for classification, floats for regression
    origin: str  # where the rows came from, for logs and tags
    text_pairs: list[str] | None = None  # the second texts of sentence pairs; None: single sentences

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: Sequence[int]) -> Split:
        """The rows at ``indices``, in that order."""
        pairs = None if self.text_pairs is None else [self.text_pairs[i] for i in indices]
        return Split([self.texts[i] for i in indices], [self.labels[i] for i in indices], self.origin, pairs)


@dataclass(frozen=True)
class Columns:
    """Which columns hold the text, the optional second text and the label."""

    text: str
    label: str
    text_pair: str | None = None
    names: tuple[str, ...] | None = None  # a headerless file's column names, in order

    def wanted(self) -> list[tuple[str, str]]:
        """(column, config key) pairs that every row must have."""
        pairs = [(self.text, "data.text_column"), (self.label, "data.label_column")]
        return pairs + ([(self.text_pair, "data.text_pair_column")] if self.text_pair else [])


@dataclass(frozen=True)
class Labels:
    """How a label reads: a class of ``names`` (by name, index or boolean), or, with ``names`` None, a regression
    score within ``score_range`` (``data.label_range``; None: any finite number)."""

    names: tuple[str, ...] | None = None
    score_range: tuple[float, float] | None = None

    def parse(self, value: object, where: str) -> int | float:
        if self.names is None:
            return parse_score(value, where, self.score_range)
        return parse_label(value, self.names, where)


@dataclass
class Rows:
    texts: list[str]
    text_pairs: list[str] | None
    labels: list


def read_lines(path: Path, key: str) -> list[str]:
    """The file's lines, split at ``\\n`` and ``\\r\\n`` only (``str.splitlines`` also splits at U+0085, U+2028,
    U+2029 and form feeds, which valid text holds); a leading BOM (MRPC's header) is dropped."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(
            f"{key}: {path} is not UTF-8 text (bad byte at offset {err.start}); valid: a UTF-8 encoded file"
        ) from None
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    return lines[:-1] if lines[-1] == "" else lines


def load_rows(path: Path, key: str, names: Sequence[str] | None) -> tuple[list[tuple[int, object]], list[str], bool]:
    """((line number, row) pairs, column names, whether the names came from the file).

    ``names``: a headerless TSV/CSV's columns, in order (its first line is then a data row)."""
    fmt = FILE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"{key}: unknown file type {path.suffix!r} ({path}); valid: {', '.join(FILE_FORMATS)}")
    lines = read_lines(path, key)
    if fmt == "jsonl":
        rows = _json_lines(lines, path, key)
        columns, from_file = sorted({k for _, row in rows if isinstance(row, dict) for k in row}), True
    else:
        records = _records(lines, fmt, path, key)
        from_file = not names
        if names:
            columns = list(names)
        else:
            columns, records = (records[0][1], records[1:]) if records else ([], [])
        _check_field_counts(records, columns, from_file=from_file, path=path, key=key)
        rows = [(number, dict(zip(columns, fields, strict=True))) for number, fields in records]
    if not rows:
        first = "a header line, then " if fmt != "jsonl" and from_file else ""
        raise UserError(f"{key}: {path} has no data rows; valid: {first}one line per example")
    return rows, columns, from_file


def _records(lines: list[str], fmt: str, path: Path, key: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of each non-empty record: a TSV line split at tabs (GLUE's files hold bare quotes), or
    a CSV record (quoted fields may hold commas, quotes and line breaks)."""
    if fmt == "tsv":
        return [(number, line.split("\t")) for number, line in enumerate(lines, start=1) if line]
    csv.field_size_limit(sys.maxsize)
    reader = csv.reader(line + "\n" for line in lines)
    records = []
    try:
        while True:
            start = reader.line_num + 1  # a quoted field may go on over several lines
            fields = next(reader, None)
            if fields is None:
                return records
            if fields:
                records.append((start, fields))
    except csv.Error as err:
        raise UserError(
            f"{key}: {path} line {reader.line_num} is not CSV ({str(err).split(' - ')[0]}); "
            'valid: comma-separated fields, in "quotes" where they hold a comma, quote or line break'
        ) from None


def _check_field_counts(
    records: list[tuple[int, list[str]]], columns: list[str], *, from_file: bool, path: Path, key: str
) -> None:
    """Every record has one field per column: ``data.columns`` that names a different number of fields than every
    row has is blamed as such; otherwise the first row that differs."""
    counts = {len(fields) for _, fields in records}
    if not from_file and len(counts) == 1 and len(columns) not in counts:
        found = counts.pop()
        raise UserError(
            f"data.columns: {len(columns)} names for the {found} fields of each row of {path}; "
            f"valid: {found} names, in the file's order"
        )
    for number, fields in records:
        if len(fields) != len(columns):
            names = "the header has" if from_file else "data.columns names"
            sep = "tab" if path.suffix.lower() == ".tsv" else "comma"
            raise UserError(
                f"{key}: {path} line {number} has {len(fields)} field{'s' if len(fields) > 1 else ''} where {names} "
                f"{len(columns)}; valid: {len(columns)} {sep}-separated fields on every line"
            )


def _json_lines(lines: list[str], path: Path, key: str) -> list[tuple[int, object]]:
    rows = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                rows.append((number, json.loads(line)))
            except json.JSONDecodeError as err:
                raise UserError(
                    f"{key}: {path} line {number} is not JSON ({err.msg}); valid: one JSON object a line"
                ) from None
    return rows


def looks_headerless(columns: Sequence[str]) -> bool:
    """A 'header' with an empty name or a number in it is most likely a data row (e.g. CoLA's files)."""
    return any(not name.strip() or _is_number(name) for name in columns)


def read_table(path: Path, columns: Columns, labels: Labels, key: str) -> Rows:
    """Texts (and second texts) and labels of every row."""
    rows, found, from_file = load_rows(path, key, columns.names)
    for column, ckey in columns.wanted():
        if column not in found:
            hint = ""
            if from_file and looks_headerless(found):
                hint = "; the file seems to have no header line: name its columns in order with data.columns=[...]"
            shown = ", ".join(found[:12]) + (", ..." if len(found) > 12 else "")
            raise UserError(f"{ckey}: column {column!r} not in {path}; columns found: {shown}{hint}")
    texts, pairs, values = [], [] if columns.text_pair else None, []
    for number, row in rows:
        where = f"{key}: {path} line {number}"
        if not isinstance(row, dict):
            raise UserError(f"{where} is {JSON_KINDS.get(type(row), 'not an object')}; valid: one JSON object a line")
        for column, ckey in columns.wanted():
            if row.get(column) is None:
                wanted = ", ".join(repr(c) for c, _ in columns.wanted())
                raise UserError(f"{where} lacks {column!r} ({ckey}); valid: a value for each of {wanted} in every row")
        texts.append(_text(row, columns.text, where))
        if pairs is not None:
            pairs.append(_text(row, columns.text_pair, where))
        values.append(labels.parse(row[columns.label], where))
    check_texts(texts, columns.text, f"{key}: {path}")
    if pairs is not None:
        check_texts(pairs, columns.text_pair, f"{key}: {path}")
    return Rows(texts, pairs, values)


def _text(row: dict, column: str, where: str) -> str:
    """A row's text, stripped; a JSON object, array, number or boolean there is refused (not trained as its str)."""
    value = row[column]
    if not isinstance(value, str):
        raise UserError(f"{where}: {column!r} is {JSON_KINDS.get(type(value), 'not text')}; valid: a JSON string")
    return value.strip()


def check_texts(texts: list[str], column: str, where: str) -> None:
    """Empty texts in ``column``: a one-line warning with their count; an error when every row's is empty."""
    empty = sum(1 for text in texts if not text)
    if empty and empty == len(texts):
        raise UserError(f"{where}: {column!r} is empty in every row; valid: a text in {column!r}")
    if empty:
        print(
            f"[ptexp] warning: {where}: {column!r} is empty in {empty} of {len(texts)} rows; they are kept as they are",
            file=sys.stderr,
        )


def parse_label(value: object, label_names: Sequence[str], where: str) -> int:
    """Map an integer label (or its string), a label name or a boolean (its name True/False) to an index."""
    text = str(value).strip()
    if text in label_names:
        return label_names.index(text)
    try:
        index = int(text)
    except ValueError:
        index = -1
    if 0 <= index < len(label_names) and str(index) == text.lstrip("+") and not isinstance(value, bool):
        return index
    raise UserError(
        f"{where}: label {text!r} is not in the label set; "
        f"valid: 0..{len(label_names) - 1} or {', '.join(label_names)} (data.label_names)"
    )


def parse_score(value: object, where: str, score_range: tuple[float, float] | None = None) -> float:
    """A regression label: a JSON (or hub) number, or a plain decimal string (``5.000``, ``3.8``, ``3``); finite,
    and within ``score_range`` when given. ``float`` alone would take ``3_5`` as 35.0, ``nan``, ``inf``, ``1e400``."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    decimal = isinstance(value, str) and DECIMAL.fullmatch(value.strip()) is not None
    score = float(value) if number or decimal else math.nan
    if not math.isfinite(score):
        raise UserError(
            f"{where}: label {str(value).strip()!r} is not a plain decimal number; "
            "valid: digits with an optional sign and decimal point, e.g. 3.8 (data.task=regression)"
        )
    if score_range is not None and not score_range[0] <= score <= score_range[1]:
        low, high = score_range
        raise UserError(
            f"{where}: label {str(value).strip()!r} is outside data.label_range [{low:g}, {high:g}]; "
            f"valid: a score {low:g} <= y <= {high:g}"
        )
    return score


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False

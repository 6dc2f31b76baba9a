"""Reading labelled text files: TSV (GLUE's, read with ``csv.QUOTE_NONE``), CSV and JSONL (SuperGLUE's).

Handles the quirks of the files researchers have: a UTF-8 BOM before the header (MRPC), headerless files whose
columns are named by ``data.columns`` (CoLA), labels as names, integers or booleans, float scores in mixed formats.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ptexp.errors import UserError

FILE_FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}


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


@dataclass
class Rows:
    texts: list[str]
    text_pairs: list[str] | None
    labels: list


def load_rows(path: Path, key: str, names: Sequence[str] | None) -> tuple[list, list[str], int, bool]:
    """(rows, column names, line number of the first row, whether the names came from the file).

    ``names``: a headerless TSV/CSV's columns, in order (its first line is then a data row)."""
    fmt = FILE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"{key}: unknown file type {path.suffix!r} ({path}); valid: {', '.join(FILE_FORMATS)}")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # -sig: MRPC's header starts with a BOM
    except UnicodeDecodeError as err:
        raise UserError(f"{key}: {path} is not UTF-8 text (bad byte at offset {err.start})") from None
    if fmt == "jsonl":
        rows, first, from_file = _json_lines(lines, path, key), 1, True
        columns = sorted({k for row in rows if isinstance(row, dict) for k in row})
    else:
        csv.field_size_limit(sys.maxsize)
        quoting = csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL  # GLUE TSVs hold bare quotes
        fieldnames = list(names) if names else None
        reader = csv.DictReader(lines, fieldnames=fieldnames, delimiter="\t" if fmt == "tsv" else ",", quoting=quoting)
        rows, first, from_file = list(reader), 1 if names else 2, not names
        columns = list(reader.fieldnames or [])
    if not rows:
        raise UserError(f"{key}: {path} has no data rows")
    return rows, columns, first, from_file


def _json_lines(lines: list[str], path: Path, key: str) -> list:
    rows = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise UserError(f"{key}: {path} line {number} is not JSON ({err.msg})") from None
    return rows


def looks_headerless(columns: Sequence[str]) -> bool:
    """A 'header' with an empty name or a number in it is most likely a data row (e.g. CoLA's files)."""
    return any(not name.strip() or _is_number(name) for name in columns)


def read_table(path: Path, columns: Columns, label_names: Sequence[str] | None, key: str) -> Rows:
    """Texts (and second texts) and labels of every row. ``label_names`` None: float labels (regression)."""
    rows, found, first, header = load_rows(path, key, columns.names)
    for column, ckey in columns.wanted():
        if column not in found:
            hint = ""
            if header and looks_headerless(found):
                hint = "; the file seems to have no header line: name its columns in order with data.columns=[...]"
            shown = ", ".join(found[:12]) + (", ..." if len(found) > 12 else "")
            raise UserError(f"{ckey}: column {column!r} not in {path}; columns found: {shown}{hint}")
    texts, pairs, labels = [], [] if columns.text_pair else None, []
    for number, row in enumerate(rows, start=first):
        where = f"{key}: {path} line {number}"
        if not isinstance(row, dict) or any(row.get(column) is None for column, _ in columns.wanted()):
            raise UserError(f"{where} lacks one of the columns {', '.join(repr(c) for c, _ in columns.wanted())}")
        texts.append(str(row[columns.text]).strip())
        if pairs is not None:
            pairs.append(str(row[columns.text_pair]).strip())
        value = row[columns.label]
        labels.append(parse_score(value, where) if label_names is None else parse_label(value, label_names, where))
    return Rows(texts, pairs, labels)


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


def parse_score(value: object, where: str) -> float:
    """A regression label: any finite number, however written (``5.000``, ``3.8``, ``3``)."""
    if isinstance(value, bool) or not _is_number(str(value)):
        raise UserError(
            f"{where}: label {str(value).strip()!r} is not a number; valid: a finite float (data.task=regression)"
        )
    return float(str(value))


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False

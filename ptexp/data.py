"""Text-classification data: the embedded set, GLUE SST-2 (hub or local TSVs), and TSV/CSV/JSONL files.

Everything ends as :class:`Split` objects (texts + integer labels), tokenised once into
:class:`EncodedSplit` and padded per batch by :func:`collate` (dynamic padding).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from ptexp.config import DataConfig, DataSource
from ptexp.errors import UserError
from ptexp.hub import check_hub_available

EMBEDDED_DIR = "resources/embedded_sentiment"
FILE_FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}


@dataclass
class Split:
    texts: list[str]
    labels: list[int]
    origin: str  # where the rows came from, for logs and tags

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Dataset:
    train: Split
    eval: Split
    label_names: list[str]


def load_dataset(cfg: DataConfig) -> Dataset:
    """Load the train and eval splits that ``cfg`` describes, subsampled as asked."""
    labels = list(cfg.label_names)
    if cfg.source == DataSource.embedded:
        folder = resources.files("ptexp").joinpath(EMBEDDED_DIR)
        train = read_table(Path(str(folder.joinpath("train.tsv"))), cfg, labels, "data")
        evals = read_table(Path(str(folder.joinpath("validation.tsv"))), cfg, labels, "data")
    elif cfg.source == DataSource.files or (cfg.source == DataSource.hub and cfg.data_dir):
        train = read_table(_data_path(cfg, "train_file"), cfg, labels, "data.train_file")
        evals = read_table(_data_path(cfg, "eval_file"), cfg, labels, "data.eval_file")
    else:
        train, evals = _load_from_hub(cfg, labels)
    return Dataset(
        train=_subsample(train, cfg.max_train_samples, cfg.subset_seed),
        eval=_subsample(evals, cfg.max_eval_samples, cfg.subset_seed),
        label_names=labels,
    )


def _data_path(cfg: DataConfig, key: str) -> Path:
    name = cfg[key]
    if not name:
        raise UserError(f"data.{key}: not set; valid: a path to a .tsv, .csv or .jsonl file")
    path = Path(cfg.data_dir, name) if cfg.data_dir else Path(name)
    path = path.expanduser().resolve()
    if not path.is_file():
        where = f" (data.data_dir={cfg.data_dir})" if cfg.data_dir else ""
        raise UserError(f"data.{key}: file not found: {path}{where}")
    return path


def read_table(path: Path, cfg: DataConfig, label_names: list[str], key: str) -> Split:
    """Read a TSV/CSV/JSONL file with a text and a label column; labels are ints or label names."""
    fmt = FILE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"{key}: unknown file type {path.suffix!r} ({path}); valid: {', '.join(FILE_FORMATS)}")
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{key}: {path} is not UTF-8 text (bad byte at offset {err.start})") from None
    lines = content.splitlines()
    if fmt == "jsonl":
        rows = []
        for number, line in enumerate(lines, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise UserError(f"{key}: {path} line {number} is not JSON ({err.msg})") from None
        columns = sorted({k for row in rows if isinstance(row, dict) for k in row})
        first_line = 1
    else:
        delimiter = "\t" if fmt == "tsv" else ","
        quoting = csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL  # GLUE TSVs hold bare quotes
        csv.field_size_limit(sys.maxsize)
        reader = csv.DictReader(lines, delimiter=delimiter, quoting=quoting)
        rows = list(reader)
        columns = list(reader.fieldnames or [])
        first_line = 2
    if not rows:
        raise UserError(f"{key}: {path} has no data rows")
    for column, ckey in ((cfg.text_column, "data.text_column"), (cfg.label_column, "data.label_column")):
        if column not in columns:
            raise UserError(f"{ckey}: column {column!r} not in {path}; columns found: {', '.join(columns)}")
    texts, labels = [], []
    for number, row in enumerate(rows, start=first_line):
        if not isinstance(row, dict) or row.get(cfg.text_column) is None or row.get(cfg.label_column) is None:
            raise UserError(f"{key}: {path} line {number} lacks {cfg.text_column!r} or {cfg.label_column!r}")
        texts.append(str(row[cfg.text_column]).strip())
        labels.append(parse_label(row[cfg.label_column], label_names, f"{key}: {path} line {number}"))
    return Split(texts=texts, labels=labels, origin=str(path))


def parse_label(value: object, label_names: Sequence[str], where: str) -> int:
    """Map an integer label (or its string) or a label name to an index into ``label_names``."""
    text = str(value).strip()
    if text in label_names:
        return label_names.index(text)
    try:
        index = int(text)
    except ValueError:
        index = -1
    if 0 <= index < len(label_names) and str(index) == text.lstrip("+"):
        return index
    raise UserError(
        f"{where}: label {text!r} is not in the label set; "
        f"valid: 0..{len(label_names) - 1} or {', '.join(label_names)} (data.label_names)"
    )


def _load_from_hub(cfg: DataConfig, label_names: list[str]) -> tuple[Split, Split]:
    """``datasets.load_dataset(hub_path, hub_name)``: a hub id (e.g. glue/sst2) or a local dataset folder."""
    if not cfg.hub_path:
        raise UserError("data.hub_path: not set; valid: a hub dataset id such as 'glue', or a local folder")
    import datasets

    datasets.disable_progress_bars()
    if not Path(cfg.hub_path).expanduser().exists():
        check_hub_available(cfg.hub_path, "dataset", "data.hub_path")
    try:
        loaded = datasets.load_dataset(cfg.hub_path, cfg.hub_name)
    except Exception as err:  # network, missing dataset, bad name: all user-facing
        raise UserError(
            f"data.hub_path: could not load {cfg.hub_path!r} (name {cfg.hub_name!r}) with datasets.load_dataset: "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}. Offline? Use data.data_dir=DIR "
            "with local train/eval files"
        ) from None
    splits = []
    for split_key in ("hub_train_split", "hub_eval_split"):
        split = cfg[split_key]
        if split not in loaded:
            raise UserError(f"data.{split_key}: no split {split!r}; splits found: {', '.join(loaded)}")
        table = loaded[split]
        for column, ckey in ((cfg.text_column, "data.text_column"), (cfg.label_column, "data.label_column")):
            if column not in table.column_names:
                raise UserError(f"{ckey}: column {column!r} not in {cfg.hub_path}; found {table.column_names}")
        where = f"data.{split_key}: {cfg.hub_path}/{split}"
        labels = [parse_label(v, label_names, where) for v in table[cfg.label_column]]
        texts = [str(t).strip() for t in table[cfg.text_column]]
        splits.append(Split(texts=texts, labels=labels, origin=f"{cfg.hub_path}/{cfg.hub_name}:{split}"))
    return splits[0], splits[1]


def _subsample(split: Split, limit: int | None, seed: int) -> Split:
    """A fixed random subset of ``limit`` rows (the same for every run seed), order kept."""
    if limit is None or limit >= len(split):
        return split
    keep = sorted(random.Random(seed).sample(range(len(split)), limit))
    return Split([split.texts[i] for i in keep], [split.labels[i] for i in keep], split.origin)


@dataclass
class EncodedSplit:
    input_ids: list[list[int]]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[list[int], int]:
        return self.input_ids[index], self.labels[index]


def encode(split: Split, tokenizer, max_length: int, cache_dir: Path | None = None) -> EncodedSplit:
    """Tokenise every text once, truncated to ``max_length``, without padding.

    With ``cache_dir`` the token ids are kept on disk, keyed by the tokenizer, the texts and ``max_length``,
    so the jobs of a sweep (and later runs) on the same data tokenise only once.
    """
    path = cache_dir / f"{token_cache_key(split, tokenizer, max_length)}.json" if cache_dir else None
    if path is not None and path.is_file():
        ids = json.loads(path.read_text())
    else:
        ids = tokenizer(split.texts, truncation=True, max_length=max_length)["input_ids"]
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(json.dumps(ids))
            os.replace(partial, path)  # atomic: parallel jobs never read a half-written file
    return EncodedSplit(input_ids=ids, labels=list(split.labels))


def token_cache_key(split: Split, tokenizer, max_length: int) -> str:
    digest = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # the whole fast tokenizer, less the truncation/padding state that calls set
        spec = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
        identity = json.dumps(spec, sort_keys=True)
    else:
        identity = f"{type(tokenizer).__name__}:{tokenizer.name_or_path}:{len(tokenizer)}"
    for part in (identity, str(max_length), *split.texts):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:32]


class LengthGroupedBatches:
    """Batches of similar length, in random order: shuffle, cut into mega-batches of ``group`` batches,
    sort each by length, split into batches, shuffle the batches (as Hugging Face's ``group_by_length``).
    Padding drops sharply while every epoch still sees a new order. Seeded by ``generator``."""

    def __init__(self, lengths: list[int], batch_size: int, generator: torch.Generator, group: int = 50):
        self.lengths, self.batch_size, self.generator, self.group = lengths, batch_size, generator, group

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self):
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        span = self.batch_size * self.group
        batches = []
        for start in range(0, len(order), span):
            mega = sorted(order[start : start + span], key=lambda i: self.lengths[i], reverse=True)
            batches += [mega[i : i + self.batch_size] for i in range(0, len(mega), self.batch_size)]
        for index in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[index]


class Collator:
    """Pads a batch to its longest row (dynamic padding)."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, batch: list[tuple[list[int], int]]) -> dict[str, torch.Tensor]:
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (ids, _) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        labels = torch.tensor([label for _, label in batch], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

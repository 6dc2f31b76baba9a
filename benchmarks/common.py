"""What the benchmarks share: ptexp sweeps run as subprocesses, finished runs read back from the MLflow SQLite store
under the output root, mean and standard deviation, the token lengths of ptexp's rows and each sampler's padding,
Markdown tables."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def run_ptexp(overrides: Sequence[str]) -> float:
    """``python -m ptexp -m OVERRIDES`` in the repository root (stdout dropped, errors shown); its wall seconds."""
    print("$ python -m ptexp -m", " ".join(overrides), flush=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ptexp", "-m", *overrides], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def store_uri(output_root: str | Path) -> str:
    """The SQLite store that ptexp writes with ``output_root=...`` (tracking.uri unset)."""
    return f"sqlite:///{Path(output_root).resolve() / 'mlflow.db'}"


def finished_runs(output_root: str | Path, experiment: str) -> list:
    """Every FINISHED run of ``experiment`` in the output root's store, oldest first; [] if there is none."""
    from mlflow.tracking import MlflowClient

    if not (Path(output_root) / "mlflow.db").is_file():
        return []
    client = MlflowClient(store_uri(output_root))
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client.search_runs([found.experiment_id], "attributes.status = 'FINISHED'", max_results=50000)
    return sorted(runs, key=lambda r: r.info.start_time)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def composed(overrides: Sequence[str]):
    """ptexp's config of ``overrides``, composed as ``python -m ptexp.study`` composes it (no recipe tables applied)."""
    import ptexp.methods  # noqa: F401  (registers the schema, every method's options included)
    from ptexp.study.spec import compose_config

    return compose_config(list(overrides))


def token_lengths(overrides: Sequence[str]) -> dict[str, list[int]]:
    """The token count of every row of each split (train, eval, and selection where one is carved) of ptexp's config
    of ``overrides``: its rows (``ptexp.data.load_dataset``), its tokenizer, ``data.max_length``."""
    from ptexp.data import encode, load_dataset
    from ptexp.models import load_tokenizer

    cfg = composed(overrides)
    data, tokenizer = load_dataset(cfg.data), load_tokenizer(cfg.model)
    splits = {"train": data.train, "eval": data.eval, **({"selection": data.selection} if data.selection else {})}
    return {name: [len(ids) for ids in encode(split, tokenizer, cfg.data.max_length).input_ids]
            for name, split in splits.items()}  # fmt: skip


SAMPLERS = {"ptexp": "ptexp's length-grouped batches", "trainer": "Trainer's group_by_length", "random": "random"}


def epoch_padding(lengths: Sequence[int], batch_size: int, sampler: str, seed: int = 0) -> tuple[int, int]:
    """(padded tokens, batches) of one epoch of rows of these token ``lengths``, batched by the sampler itself
    (SAMPLERS): ptexp's LengthGroupedBatches, Trainer's LengthGroupedSampler, or a random permutation."""
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from ptexp.encoding import LengthGroupedBatches

    generator = torch.Generator().manual_seed(seed)
    if sampler == "ptexp":
        batches = list(LengthGroupedBatches(list(lengths), batch_size, generator))
    else:
        order = (list(LengthGroupedSampler(batch_size, lengths=list(lengths), generator=generator))
                 if sampler == "trainer" else torch.randperm(len(lengths), generator=generator).tolist())  # fmt: skip
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return sum(len(batch) * max(lengths[i] for i in batch) for batch in batches), len(batches)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table, first column left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(headers) + " |", "|---" + "|---:" * (len(headers) - 1) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)

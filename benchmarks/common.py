"""What the benchmarks share: ptexp sweeps run as subprocesses, finished runs read back from the MLflow SQLite store
under the output root, mean and standard deviation, task metrics, Markdown tables."""

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


def score(metric: str, predictions: Sequence[float], labels: Sequence[float]) -> float:
    """A GLUE metric: accuracy, f1 (positive class 1), mcc, pearson or spearman."""
    if metric in ("pearson", "spearman"):
        from scipy import stats

        test = stats.pearsonr if metric == "pearson" else stats.spearmanr
        return float(test(predictions, labels)[0])
    from sklearn import metrics

    functions = {"accuracy": metrics.accuracy_score, "f1": metrics.f1_score, "mcc": metrics.matthews_corrcoef}
    return float(functions[metric](labels, predictions))


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table, first column left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(headers) + " |", "|---" + "|---:" * (len(headers) - 1) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)

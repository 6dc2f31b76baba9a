"""The cross-task benchmark (benchmarks/tasks.py, hf_peer.py) on the real GLUE files in ../shared/data: the peer
trains on exactly ptexp's rows, and (slow) one tiny invocation runs the study (python -m ptexp.study) and the peer
end to end, writes its tables and recipes, and a second invocation finds every run done in MLflow and trains
nothing. The protocol's own tests (the budget, the fill epochs): tests/test_study.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ptexp.data import load_dataset
from tests.conftest import ROOT, make_config

GLUE_DIR = ROOT.parent / "shared" / "data" / "glue"
sys.path.insert(0, str(ROOT / "benchmarks"))
pytestmark = pytest.mark.skipif(not GLUE_DIR.exists(), reason="../shared/data/glue not present")


TASKS = [
    ("rte", "glue_rte", "RTE"),
    ("mrpc", "glue_mrpc", "MRPC"),
    ("stsb", "glue_stsb", "STS-B"),
    ("cola", "glue_cola", "CoLA"),
]


@pytest.mark.parametrize(("task", "preset", "folder"), TASKS)
def test_the_peer_trains_on_ptexps_rows_without_the_selection_rows(task, preset, folder):
    from hf_peer import load_task_rows

    peer_train, peer_dev = load_task_rows(task, GLUE_DIR / folder, 200, 50)
    cfg = make_config(f"data={preset}", f"data.data_dir={GLUE_DIR / folder}", "data.max_train_samples=200",
                      "data.selection_rows=50")  # fmt: skip
    data = load_dataset(cfg.data)
    ours = list(zip(data.train.texts, data.train.text_pairs or [None] * len(data.train.texts), strict=True))
    assert peer_train.pairs == ours and len(ours) == 200
    assert peer_train.labels == pytest.approx([float(y) for y in data.train.labels])
    assert peer_dev.labels == pytest.approx([float(y) for y in data.eval.labels])
    held_out = set(zip(data.selection.texts, data.selection.text_pairs or [None] * 50, strict=True))
    assert not held_out & set(peer_train.pairs)


def run_benchmark(out, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "benchmarks/tasks.py", "--quick", "--tasks", "rte", "--train-rows", "48",
           "--selection-rows", "24", "--max-steps", "2", "--output-root", str(out), *extra]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)  # 1,021 s at load 13 on 2 cores


@pytest.mark.slow
def test_one_invocation_chooses_runs_reports_and_resumes(tmp_path):
    first = run_benchmark(tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    table = (tmp_path / "tasks-quick.md").read_text()
    for row in ("**full, lr 0.0002, 2 steps** (chosen)", "**prefix P=20, lr 0.02, 2 steps** (chosen)",
                "hf_trainer, lr 2e-05, 2 steps", "hf_trainer_grouped, lr 2e-05, 2 steps"):  # fmt: skip
        assert row in table, table
    assert table.count("PASS") + table.count("MISS") == 4
    assert "tasks-quick_time_score.png" in table and (tmp_path / "tasks-quick_time_score.png").stat().st_size > 10_000
    recipes = json.loads((tmp_path / "tasks-quick_recipes.json").read_text())
    assert {m: recipes["rte"][m]["lr"] for m in ("full", "prefix", "lora")} == {"full": 2e-4, "prefix": 2e-2,
                                                                                "lora": 2e-3}  # fmt: skip
    again = run_benchmark(tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "$ python -m ptexp -m" not in again.stdout and "$ hf_peer.py" not in again.stdout  # nothing trained
    assert (tmp_path / "tasks-quick.md").read_text() == table


def test_time_ratios_pair_each_seed_with_the_same_seed():
    from tasks_report import time_ratio

    # seed 1 timed on a fast day, seeds 2 and 3 on a slow one: each seed's ratio is 0.5, the ratio of means is not
    full = {"seconds": {1: 30.0, 2: 40.0, 3: 40.0}, "train_s": 110 / 3}
    peer = {"seconds": {1: 60.0, 2: 80.0, 3: 80.0}, "train_s": 220 / 3}
    grid_point = {"seconds": {1: 15.0}, "train_s": 15.0}
    assert time_ratio(full, peer) == pytest.approx(0.5)
    assert time_ratio(grid_point, full) == pytest.approx(0.5)  # paired with full's seed 1 only
    assert time_ratio({"seconds": {4: 10.0}, "train_s": 10.0}, full) == pytest.approx(10 / (110 / 3))  # no common seed


def test_targets_pass_on_the_gap_intervals_lower_end_not_on_the_point_gap():
    from tasks_report import targets

    from ptexp.report.intervals import BOTH, Interval

    def row(method: str, mean: float, seconds: float) -> dict:
        return {"method": method, "mean": mean, "seeds": 3, "seconds": {1: seconds}, "train_s": seconds, "last": 0}

    table = {m: row(m, 0.79, 6.0) for m in ("prefix", "lora")}
    table |= {"full": row("full", 0.80, 10.0)} | {p: row(p, 0.78, 20.0) for p in ("hf_trainer", "hf_trainer_grouped")}
    given = {  # row minus base, in points: every point gap meets its target, not every interval
        "prefix": Interval(-4.0, 2.0, BOTH),  # -1.0 behind (within 2.0), but the interval reaches -4.0
        "lora": Interval(-1.4, -0.6, BOTH),  # its lower end within 1.5
        "hf_trainer": Interval(0.5, 3.5, BOTH),  # full - peer: above 0
        "hf_trainer_grouped": Interval(-0.5, 4.5, BOTH),  # contains 0: not shown to be >= the peer
    }

    def interval(r: dict, base: dict):
        return given[base["method"] if r is table["full"] else r["method"]], BOTH

    found = targets(table, "accuracy", {}, interval)
    assert [ok for ok, _ in found] == [True, False, True, False], found  # Trainer, grouped, LoRA, prefix
    assert found[2][1].startswith("lora") and found[3][1].startswith("prefix"), found
    assert "95% interval [-4.0, +2.0] (seeds + dev examples)" in found[3][1]
    nothing = targets(table, "accuracy", {}, lambda r, base: (None, "none: no predictions artifact and a single seed"))
    assert not any(ok for ok, _ in nothing)

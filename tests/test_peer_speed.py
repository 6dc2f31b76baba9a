"""benchmarks/peer_speed.py: the ratios and targets from each run's train seconds, and (slow) one tiny invocation
on the real RTE files, alternating ptexp and both Trainer samplers, each run read back from MLflow."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
RTE_DIR = ROOT.parent / "shared" / "data" / "glue" / "RTE"


def test_targets_judge_the_ratio_of_the_means_and_show_each_repeats_ratio():
    from peer_speed import ratios, summary, task_markdown

    def runs(*seconds: float) -> list[dict]:
        return [{"train_s": s, "steps": 64, "dev": 0.6} for s in seconds]

    measured = {"ptexp": runs(27.0, 29.0), "grouped": runs(30.0, 34.0), "random": runs(40.0, 50.0)}
    found = ratios(measured)
    assert found["grouped"]["ratio"] == pytest.approx(28 / 32) and found["grouped"]["passed"]  # 0.875 <= 0.9
    assert found["grouped"]["per_repeat"] == pytest.approx([0.9, 29 / 34]) and not found["grouped"]["straddles"]
    assert found["random"]["ratio"] == pytest.approx(28 / 45) and not found["random"]["passed"]  # 0.622 > 0.6
    assert found["random"]["straddles"]  # 27/40 = 0.675 and 29/50 = 0.58 lie on both sides of 0.6
    pad = {"real_tokens": 1000, "rows": 10, **{v: {"padded_tokens": 2000.0, "steps": 64} for v in measured}}
    table = task_markdown("rte", {"runs": measured, "ratios": found, "padding": pad})
    assert "| Trainer group_by_length | 30.0, 34.0 | 32.0 | 0.88 (0.90, 0.85) | <= 0.9: PASS |" in table
    assert "0.62 (0.68, 0.58) | <= 0.6: MISS (repeats straddle it)" in table
    assert "| rte | 0.88 PASS | 0.62 MISS |" in summary({"rte": {"ratios": found}})


@pytest.mark.slow
@pytest.mark.skipif(not RTE_DIR.exists(), reason="../shared/data/glue not present")
def test_one_invocation_alternates_the_variants_and_writes_the_tables(tmp_path):
    cmd = [sys.executable, "benchmarks/peer_speed.py", "--smoke", "--tasks", "rte", "--repeats", "2", "--out",
           str(tmp_path)]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)  # 100 s at load 4 on 2 cores
    assert done.returncode == 0, done.stderr[-3000:]
    order = [line.split(" (load")[0] for line in done.stdout.splitlines() if line.startswith("$ ")]
    assert order == [f"$ rte {v} repeat {r}" for r in (1, 2) for v in ("ptexp", "grouped", "random")]
    assert done.stdout.startswith("load average before: ") and "load average after: " in done.stdout
    numbers = json.loads((tmp_path / "peer_speed.json").read_text())["tasks"]["rte"]
    for variant in ("ptexp", "grouped", "random"):
        runs = numbers["runs"][variant]
        assert len(runs) == 2 and all(r["train_s"] > 0 and r["steps"] == 1 for r in runs)
        assert numbers["padding"][variant]["padded_tokens"] >= numbers["padding"]["real_tokens"]
    assert len({r["run_id"] for v in numbers["runs"].values() for r in v}) == 6  # each its own MLflow run
    assert "| rte |" in (tmp_path / "peer_speed.md").read_text()

"""benchmarks/scaling.py end to end at a tiny size (slow): each method's worker builds its model through the
trainer's own code and times train steps and inference batches, and the table, JSON and plot come out. It keeps the
benchmark in step with the trainer's API (``ptexp.trainer.build``, ``ptexp.loop.TrainJob``)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_a_tiny_scaling_run_times_every_method_and_writes_its_table_and_plot(tmp_path):
    cmd = [sys.executable, "benchmarks/scaling.py", "--model", "tiny", "--lengths", "16", "32", "--batches", "2",
           "--steps", "1", "--infer-batches", "1", "--out", str(tmp_path)]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    cells = json.loads((tmp_path / "scaling.json").read_text())
    text = json.dumps(cells)
    for method in ("full", "prefix", "lora"):
        assert method in text and method in done.stdout
    assert (tmp_path / "scaling.png").stat().st_size > 10_000

"""Slow: MiniLM on the real GLUE SST-2 files (../shared/data/sst2). Run with `make test-slow`."""

from __future__ import annotations

import pytest

from tests.conftest import SST2_DIR, run_cli, runs_in

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SST2_DIR.exists(), reason="../shared/data/sst2 not present"),
]


@pytest.mark.parametrize("method,floor", [("full", 0.75), ("prefix", 0.68)])
def test_minilm_learns_sst2_from_2000_rows(tmp_path, method, floor):
    """The issue's acceptance command (plus the method); accuracy floors far above the 50.9% majority class."""
    proc = run_cli(
        f"method={method}",
        "data=sst2",
        f"data.data_dir={SST2_DIR}",
        "data.max_train_samples=2000",
        "trainer.progress=false",
        f"output_root={tmp_path}",
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = runs_in(tmp_path / "mlflow.db")
    assert run.info.status == "FINISHED"
    assert run.data.metrics["data/eval_rows"] == 872
    assert run.data.metrics["eval/accuracy"] >= floor, run.data.metrics

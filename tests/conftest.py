"""Shared fixtures: configs composed with Hydra's compose API, and a CLI runner for real subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

import ptexp.methods  # noqa: F401  (registers the schema, every method's options included)

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = str(ROOT / "conf")
SST2_DIR = ROOT.parent / "shared" / "data" / "sst2"
TINY = [
    "model=tiny",
    "trainer.progress=false",
    "trainer.epochs=1",
    "data.max_train_samples=64",
    "data.max_eval_samples=32",
]


def make_config(*overrides: str, output_root: Path | None = None) -> DictConfig:
    """Compose conf/config.yaml with overrides, as the CLI would (without Hydra's run-time node)."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    if output_root is not None:
        with open_dict(cfg):
            cfg.output_root = str(output_root)
    return cfg


@pytest.fixture
def tiny_config(tmp_path):
    def build(*overrides: str) -> DictConfig:
        return make_config(*TINY, *overrides, output_root=tmp_path / "outputs")

    return build


def run_cli(*args: str, cwd: Path = ROOT, timeout: float = 600, env: dict | None = None, module: str = "ptexp"):
    """Run ``python -m MODULE ARGS`` as a real process; returns CompletedProcess with text output."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})},
    )


def runs_in(store: Path, experiment: str = "ptexp"):
    """All runs of ``experiment`` in the SQLite store at ``store``, as MLflow Run objects."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])

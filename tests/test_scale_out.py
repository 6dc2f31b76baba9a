"""Scaling out, through the real command line: a sweep whose jobs run as separate processes under submitit
(hydra/launcher=submitit_local) and an Optuna search (hparams_search=prefix_optuna), both checked in a real SQLite
MLflow store; and the Slurm preset's sbatch script (no cluster here: a fake `sbatch` keeps it)."""

from __future__ import annotations

import importlib.util
import math
import os
import stat
from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY, run_cli, runs_in


def needs(plugin: str, extra: str):
    missing = importlib.util.find_spec(f"hydra_plugins.{plugin}") is None
    return pytest.mark.skipif(missing, reason=f'needs pip install -e ".[{extra}]"')


def parent_and_children(store: Path):
    runs = runs_in(store)
    (parent,) = [r for r in runs if r.data.tags.get("ptexp.sweep") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 1 + len(children), [r.info.run_name for r in runs]
    return parent, children


@pytest.mark.slow  # kept out of the default suite for time; `make test-slow` runs it
@needs("hydra_submitit_launcher", "slurm")
def test_submitit_local_sweep_runs_each_job_in_its_own_process_under_one_parent_run(tmp_path):
    proc = run_cli("-m", "hydra/launcher=submitit_local", *TINY, "method=full,prefix", f"output_root={tmp_path}")
    said = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, said
    everything = proc.stdout + proc.stderr
    assert "Submitit 'local' sweep output dir" in everything and "sweep done: 2 of 2 runs finished" in everything, said
    assert "Traceback" not in everything, said
    parent, children = parent_and_children(tmp_path / "mlflow.db")
    assert parent.info.status == "FINISHED", said
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children), said
    assert sorted(r.data.tags["ptexp.method"] for r in children) == ["full", "prefix"]
    assert {r.data.params["trainer.threads"] for r in children} == {"1"}  # cpus_per_task of the preset
    # Each job ran in a submitit worker process (its own log and pickled result), not in the sweep's process, so the
    # parent run id above reached it through the environment (PTEXP_PARENT_RUN_ID).
    (sweep_dir,) = {Path(r.data.tags["ptexp.run_dir"]).parent for r in children}
    assert Path(parent.data.tags["ptexp.sweep_dir"]) == sweep_dir
    results = sorted((sweep_dir / ".submitit").glob("*/*_result.pkl"))
    logs = {p.name: p.read_text() for p in (sweep_dir / ".submitit").glob("*/*_log.out")}
    assert len(results) == 2 and len({p.parent.name for p in results}) == 2 and len(logs) == 2, (results, logs)
    for run in children:  # created by the job in its worker process, with the parent id from the environment
        assert sum(f"run {run.info.run_id}" in log for log in logs.values()) == 1, (run.info.run_id, logs)


@needs("hydra_submitit_launcher", "slurm")
def test_slurm_preset_writes_the_sbatch_array_script_with_its_resources(tmp_path):
    """No cluster here: a fake `sbatch` keeps the script submitit wrote and refuses the job."""
    bin_dir, kept = tmp_path / "bin", tmp_path / "job.sbatch"
    bin_dir.mkdir()
    for name, body in (("sbatch", f'cp "$1" {kept}\n'), ("srun", "")):  # submitit looks for srun first
        fake = bin_dir / name
        fake.write_text(f'#!/bin/sh\n{body}echo "{name}: error: no cluster here" >&2\nexit 1\n')
        fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    proc = run_cli(
        "-m",
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.array_parallelism=1",
        *TINY,
        "method=full,prefix",
        f"output_root={tmp_path / 'out'}",
        "tracking.enabled=false",  # nothing is trained: no store needed
        env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
        timeout=120,
    )
    assert proc.returncode != 0 and kept.is_file(), proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "sbatch: error: no cluster here" in proc.stderr
    script = kept.read_text()
    for flag in (
        "#SBATCH --partition=gpu",
        "#SBATCH --array=0-1%1",  # 2 jobs, one at a time
        "#SBATCH --job-name=ptexp",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --mem=32GB",
        "#SBATCH --time=240",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=1",
        "-m submitit.core._submit",
    ):
        assert flag in script, script
    assert "--export" not in script  # sbatch's default (ALL): the jobs inherit PTEXP_PARENT_RUN_ID
    assert "/multiruns/" in script and "/.submitit/" in script  # submitit_folder lies in the sweep folder


@pytest.mark.slow  # kept out of the default suite for time; `make test-slow` runs it
@needs("hydra_optuna_sweeper", "optuna")
def test_optuna_search_runs_2_trials_in_the_search_space_and_optimises_on_the_selection_split(tmp_path):
    proc = run_cli("-m", "hparams_search=prefix_optuna", "hydra.sweeper.n_trials=2", *TINY, f"output_root={tmp_path}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    parent, children = parent_and_children(tmp_path / "mlflow.db")
    assert parent.info.status == "FINISHED"
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
    assert {r.data.tags["ptexp.method"] for r in children} == {"prefix"}
    lrs = [float(r.data.params["optimizer.lr"]) for r in children]
    lengths = [int(r.data.params["prefix_length"]) for r in children]
    assert all(1e-3 <= lr <= 5e-2 for lr in lrs) and len(set(lrs)) == 2, lrs
    assert set(lengths) <= {5, 10, 20, 40}, lengths
    trials = list(zip(lrs, lengths, strict=True))
    for run in children:  # the prefix length the trial asked for is the one the run trained with
        assert f"-P{run.data.params['prefix_length']}-" in run.info.run_name
        # the preset carves a selection split (10% of train) and restores its best epoch
        assert run.data.params["data.selection_fraction"] == "0.1" and run.data.metrics["data/selection_rows"] > 0
        assert run.data.params["trainer.select_best"] == "True"
    results = yaml.safe_load((Path(parent.data.tags["ptexp.sweep_dir"]) / "optimization_results.yaml").read_text())
    scores = [r.data.metrics["selection/best_accuracy"] for r in children]  # what Optuna maximised, not eval/*
    assert math.isclose(results["best_value"], max(scores), rel_tol=0, abs_tol=1e-9), (results, scores)
    chosen = (results["best_params"]["optimizer.lr"], results["best_params"]["prefix_length"])
    (winner,) = [r for r, trial in zip(children, trials, strict=True) if trial == chosen]
    assert math.isclose(winner.data.metrics["selection/best_accuracy"], results["best_value"], abs_tol=1e-9)
    said = proc.stdout + proc.stderr
    assert said.count("[ptexp] objective (what a sweeper optimises): selection/best_accuracy ") == 2, said[-3000:]
    rows = int(children[0].data.metrics["data/selection_rows"])
    line = f"the search optimised selection/best_accuracy: the best value is on the selection split ({rows} rows"
    assert line in proc.stdout and proc.stdout.index(line) > said.index("Best value"), said[-3000:]

"""``python -m ptexp.report --study``: a study's outcome from a real MLflow store laid out as ``python -m ptexp.study``
lays it out (a study run with its cells' tags, the jobs' runs tagged with the study key): each cell's chosen
recipe over its seeds, the grid's other recipes left out, the choice, budget and grid shown per cell. The study
command's own end-to-end test (tests/test_study.py, slow) reports a real study this way too."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from ptexp.report.__main__ import main
from tests.test_report import printed_table

KEY = "sdeadbeef0001"
# (method, lr, seed, status) -> eval accuracy; full chose 2e-4, prefix 2e-2 (seed 1 from the grid, 2 from seeds)
RUNS = {
    ("full", "0.0001", "1", "FINISHED"): 0.70,
    ("full", "0.0002", "1", "FINISHED"): 0.80,
    ("full", "0.0002", "2", "FINISHED"): 0.82,
    ("prefix", "0.005", "1", "FINISHED"): 0.60,
    ("prefix", "0.02", "1", "FINISHED"): 0.76,
    ("prefix", "0.02", "2", "FINISHED"): 0.74,
    ("prefix", "0.02", "3", "KILLED"): 0.10,  # an interrupted seed: not the study's outcome
}


def log_study(root: Path) -> str:
    """A study run and its jobs' runs in ``root``'s store; returns the study run's id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.create_experiment("ptexp", artifact_location=(root / "mlartifacts").as_uri())
    ids = {}
    for (method, lr, seed, status), accuracy in RUNS.items():
        tags = {"ptexp.method": method, "ptexp.model": "tiny", "ptexp.data": "embedded", "study_key": KEY}
        run = client.create_run(experiment, run_name=f"{method}-{lr}-s{seed}", tags=tags).info.run_id
        params = {"seed": seed, "optimizer.lr": lr, "prefix_length": "20" if method == "prefix" else "None",
                  "tracking.experiment": "ptexp", "output_root": str(root)}  # fmt: skip
        for key, value in params.items():
            client.log_param(run, key, value)
        for key, value in {"eval/accuracy": accuracy, "time/train_s": 1.0, "params/total": 1000}.items():
            client.log_metric(run, key, value)
        client.set_terminated(run, status)
        ids[(method, lr, seed)] = run
    tags = {"ptexp.study": "parent", "ptexp.study_key": KEY, "ptexp.overrides": "python -m ptexp.study model=tiny"}
    for method, chosen, other in (("full", "0.0002", "0.0001"), ("prefix", "0.02", "0.005")):
        grid = [{"recipe": f"optimizer.lr={lr}", "selection": score, "train_s": 1.0, "steps": 2}
                for lr, score in ((other, 0.5), (chosen, 0.9))]  # fmt: skip
        tags |= {f"study.tiny/{method}.chosen": f"optimizer.lr={chosen}", f"study.tiny/{method}.grid": json.dumps(grid),
                 f"study.tiny/{method}.budget": "none" if method == "full" else "steps <= 2.0",
                 f"study.tiny/{method}.chosen_run": ids[(method, chosen, "1")]}  # fmt: skip
    return client.create_run(experiment, run_name="study", tags=tags).info.run_id


def report(*args: str) -> int:
    with pytest.raises(SystemExit) as ended:
        main(list(args))
    return ended.value.code


def test_a_study_report_shows_each_cells_chosen_recipe_over_its_seeds_and_its_grid(tmp_path, capsys):
    study = log_study(tmp_path)
    assert report("--output-root", str(tmp_path), "--study", "--out", str(tmp_path / "r")) == 0
    out = capsys.readouterr().out
    assert f"study 'study' ({study}): each cell's chosen recipe, every seed: 4 finished run(s)" in out
    tasks = {r["method"]: r for r in printed_table(out, "task")}
    assert tasks["full"]["seeds"] == "2" and tasks["prefix P=20"]["seeds"] == "2"
    assert tasks["prefix P=20"]["gap to full"] == "-6.00 pts"  # (0.76 + 0.74 - 0.80 - 0.82) / 2; 0.60, 0.70 not in
    assert "tiny / prefix P=20: recipe=optimizer.lr=0.02; budget=steps <= 2.0; grid=optimizer.lr=0.005: " in out
    assert "optimizer.lr=0.005: 0.5000 (1 s), optimizer.lr=0.02: 0.9000 (1 s)" in out
    with (tmp_path / "r" / "tasks.csv").open() as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert rows["full"]["study"].startswith("recipe=optimizer.lr=0.0002; budget=none; grid=")
    md = (tmp_path / "r" / "report.md").read_text()
    assert "### Recipes" in md and "python -m ptexp.study model=tiny" in md
    assert f"attached to study run {study}" in out
    assert report("--output-root", str(tmp_path), "--study", study, "--no-attach", "--out", str(tmp_path / "s")) == 0


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--study", "nope"], "error: --study: 'nope' is not a study run of this experiment; valid: "),
        (["--study", "--filter", "tags.x = 'y'"], "--filter: not with --study"),
    ],
)
def test_a_bad_study_selection_is_one_error_line_and_exit_2(tmp_path, capsys, extra, needle):
    log_study(tmp_path)
    assert report("--output-root", str(tmp_path), *extra) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err

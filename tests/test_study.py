"""``python -m ptexp.study``: the plan, bad input (in-process: one ``error:`` line, exit 2, nothing written), how
the jobs are cut into Hydra sweeps and a recipe chosen within the budget; and (slow, real subprocesses) a study end
to end on the tiny model, killed by SIGTERM after its first finished run and run again: it finishes without
redoing a finished run and leaves no RUNNING run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from ptexp.experiment import use_method_epochs
from ptexp.signals import Interrupted, StopSignals
from ptexp.study.__main__ import main
from ptexp.study.choose import Scored, budget_limit, choose, epochs_within, fill_recipes
from ptexp.study.launch import blocks, run_forwarding, sweep_overrides
from ptexp.study.recipes import entries_of, recipes_text, write_recipes
from ptexp.study.spec import Cell, Job, compose_cells, compose_config, job_overrides
from tests.conftest import ROOT, make_config, runs_in

TINY = ["model=tiny", "trainer.progress=false", "data.max_train_samples=48", "data.selection_rows=24",
        "data.max_eval_samples=32", "trainer.epochs=1"]  # fmt: skip
GRID = "study.grid={optimizer.lr:[1e-3,1e-2],trainer.epochs:[1]}"


def study(tmp_path: Path, *args: str) -> list[str]:
    return [*TINY, f"output_root={tmp_path / 'out'}", *args]


def test_plan_counts_the_jobs_of_each_stage_and_estimates_their_time_without_writing(tmp_path, capsys):
    code = main([*study(tmp_path, "method=full,prefix", GRID, "study.seeds=[1,2,3]"), "--plan"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "2 cells x grid, then 3 seeds" in out and "full: 2 grid recipes" in out and "prefix: 2 grid recipes" in out
    assert "grid: 4 runs (0 finished earlier)" in out
    assert "seeds: 6 runs, 4 beyond the grid's" in out and "jobs to run: 8" in out
    # tiny: 20 s start-up + 2 steps x 32 rows x 0.002 s (x 0.56 for prefix) per run
    assert "estimated time: ~3 min" in out
    assert not (tmp_path / "out").exists()


def test_plan_of_a_preset_with_per_method_grids_and_fill(tmp_path, capsys):
    code = main(["experiment=glue_compare", f"output_root={tmp_path / 'out'}", "data=glue_rte,glue_sst2", "--plan"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "6 cells" in out and "glue_rte/full: 2 grid recipes" in out and "glue_rte/prefix: 3 grid recipes" in out
    assert "grid: 16 runs" in out and "fill: up to 12 runs more" in out and "seeds: 18 runs, 12 beyond" in out


def test_one_value_of_a_preset_axis_on_the_command_line_is_part_of_the_same_study(tmp_path, capsys):
    """``data=glue_stsb`` narrows the preset's data axis: the same key (so the same runs), fewer cells; a value the
    preset does not sweep adds cells to the same study, as a comma-separated one does."""
    preset = ["experiment=scale_study_tuned", f"output_root={tmp_path / 'out'}"]
    keys, cells = [], []
    for narrowed in ([], ["data=glue_stsb"], ["data=glue_stsb", "model=mpnet_base"], ["model=bert_base"]):
        assert main([*preset, *narrowed, "--plan"]) == 0
        head = capsys.readouterr().out.splitlines()[0]  # study <key>: <n> cells x grid, ...
        keys.append(head.split(":")[0])
        cells.append(head.split(": ")[1].split(" cells")[0])
    assert len(set(keys)) == 1 and cells == ["12", "6", "3", "6"]


BAD = {
    "empty_grid": (["study.grid={}"], ["study.grid: empty for method=full", "valid: config keys and values"]),
    "no_values": (["study.grid={optimizer.lr:[]}"], ["study.grid.optimizer.lr: no values"]),
    "not_a_key": (
        ["study.grid={optimizer.learning_rate:[1e-3]}"],
        ["study.grid.optimizer.learning_rate", "no such config key", "lr"],
    ),
    "a_group": (["study.grid={optimizer:[sgd]}"], ["study.grid.optimizer", "config group", "cell axis"]),
    "wrong_type": (["study.grid={trainer.batch_size:[abc]}"], ["study.grid.trainer.batch_size", "'abc'"]),
    "method_grid_key": (
        ["method=full,lora", GRID, "study.method_grid.lora={lora.rank:[4]}"],
        ["study.method_grid.lora.lora.rank", "no such config key"],
    ),
    "no_selection_split": ([GRID, "data.selection_rows=null"], ["data.selection_rows", "no selection split"]),
    "no_reference": (
        ["method=prefix,lora", GRID],
        ["study.budget.reference", "no cell of method=full", "study.budget.rule=none"],
    ),
    "steps_budget_unfit": (
        ["method=full,prefix", "study.budget.rule=steps", "study.budget.factor=0.5", GRID],
        ["study.budget", "no recipe of prefix fits 0.5 x the steps", "fewer epochs"],
    ),
    "no_seeds": ([GRID, "study.seeds=[]"], ["study.seeds: empty"]),
    "factor": ([GRID, "study.budget.factor=0"], ["study.budget.factor", "> 0"]),
    "untracked": ([GRID, "tracking.enabled=false"], ["tracking.enabled", "MLflow"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_error_line_exit_2_and_nothing_written(case, tmp_path, capsys):
    args, needles = BAD[case]
    code = main(study(tmp_path, *args))
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("arg", ["study.budget.rule=never", "study.eval_history=often"])
def test_a_value_the_schema_refuses_exits_before_composing(arg, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(study(tmp_path, GRID, arg))
    assert exit_info.value.code == 2 and arg.split("=")[0] in capsys.readouterr().err


def jobs(*assignments: tuple) -> list[Job]:
    cells = {}
    out = []
    for method, lr, seed in assignments:
        cell = cells.setdefault(method, Cell((("method", method),), make_config()))
        out.append(Job(cell, (("optimizer.lr", lr),), seed))
    return out


def test_the_jobs_are_cut_into_product_sweeps():
    whole = jobs(("full", 1e-3, 1), ("full", 1e-2, 1), ("prefix", 1e-3, 1), ("prefix", 1e-2, 1))
    assert [sweep_overrides(b) for b in blocks(whole)] == [["method=full,prefix", "optimizer.lr=0.001,0.01", "seed=1"]]
    # resumed: one grid point of full done; each method's chosen rate differs in the seeds stage
    assert [sweep_overrides(b) for b in blocks(whole[1:])] == [
        ["method=full", "optimizer.lr=0.01", "seed=1"],
        ["method=prefix", "optimizer.lr=0.001,0.01", "seed=1"],
    ]
    seeds = jobs(("full", 1e-3, 2), ("full", 1e-3, 3), ("prefix", 1e-2, 2), ("prefix", 1e-2, 3))
    assert [sweep_overrides(b) for b in blocks(seeds)] == [
        ["method=full", "optimizer.lr=0.001", "seed=2,3"],
        ["method=prefix", "optimizer.lr=0.01", "seed=2,3"],
    ]


def test_a_jobs_command_line_composes_the_config_its_cell_planned_with():
    """job_overrides (what each sweep gets) and compose_cells (what the plan and checks read) apply one list of
    settings: a preset's recipe tables cleared for the grid's keys, best epoch on, the dev curve off."""
    base = ["experiment=glue_compare", "data=glue_rte", "optimizer.task_lr.glue_rte.prefix=0.123"]
    (cell,) = compose_cells(base, {"method": ["prefix"]}, {})
    job = Job(cell, (("optimizer.lr", 2e-2),), 1)
    given = [o for o in job_overrides(job, "skey") if not o.startswith("+tracking")]
    composed = compose_config([*base, "method=prefix", *given])
    assert OmegaConf.to_yaml(composed) == OmegaConf.to_yaml(cell.cfg)
    assert not cell.cfg.optimizer.task_lr and not cell.cfg.trainer.task_epochs  # the grid has lr and epochs
    assert (cell.cfg.trainer.select_best, cell.cfg.trainer.eval_history) == (True, False)
    use_method_epochs(composed)  # as the job's trainer applies a preset's tables: none is left to apply
    assert composed.optimizer.lr != 0.123


def point(lr: float, selection: float, train_s: float, epochs: float = 3.0) -> Scored:
    return Scored((("optimizer.lr", lr), ("trainer.epochs", epochs)), selection, train_s, 10 * epochs, "run")


def test_the_best_recipe_within_the_budget_wins():
    full = point(2e-4, 0.80, 30.0)
    budget = make_config().study.budget  # rule time, factor 1
    limit = budget_limit(budget, full)
    assert limit == ("train_s", 30.0)
    grid = [point(2e-2, 0.70, 12.0), point(5e-2, 0.75, 12.5), point(2e-2, 0.79, 31.0, epochs=8.0)]
    assert choose(grid, limit).selection == 0.75  # the 0.79 takes more than full's time
    assert choose(grid, None).selection == 0.79
    assert choose(grid, ("train_s", 5.0)) is None


def test_fill_runs_the_grid_at_the_most_whole_epochs_within_nine_tenths_of_the_budget():
    # SST-2's measured seconds at 1,000 rows: full 33 s; prefix 12.5 s for 3 epochs -> 7 epochs (29 s <= 29.7 s)
    assert epochs_within(33.0, 12.5 / 3, 3.0) == 7.0
    assert epochs_within(94.0, 66.0 / 3, 3.0) is None  # RTE: 3 epochs already take 0.7x full's time
    assert epochs_within(30.0, 10.0, 3.0) is None  # exactly the base: nothing longer to try
    grid = [point(2e-2, 0.7, 12.0), point(5e-2, 0.7, 13.0)]
    assert fill_recipes(grid, 33.0) == [(("optimizer.lr", 2e-2), ("trainer.epochs", 7.0)),
                                        (("optimizer.lr", 5e-2), ("trainer.epochs", 7.0))]  # fmt: skip


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's exit may wait for PID 1 to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_an_interrupt_stops_the_sweeps_whole_process_group_not_only_its_first_process(tmp_path):
    # a sweep whose jobs run in worker processes of their own (as under hydra/launcher=joblib)
    worker, sweep = tmp_path / "worker.pid", tmp_path / "sweep.py"
    # the worker ignores SIGTERM, as an idle pool worker may: it is killed once no job of the study is RUNNING
    job = ("import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
           f"open({str(worker)!r}, 'w').write(str(os.getpid())); time.sleep(120)")  # fmt: skip
    sweep.write_text(
        f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', {job!r}])\ntime.sleep(120)\n"
    )
    threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
    started = time.monotonic()
    with StopSignals(), pytest.raises(Interrupted):
        run_forwarding([sys.executable, str(sweep)], dict(os.environ))
    assert time.monotonic() - started < 60
    pid = int(worker.read_text())
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(pid), "the sweep's worker process outlived the interrupted study"


def test_the_chosen_recipes_become_per_task_tables_that_a_preset_applies():
    cells = [Cell((("data", d), ("method", m)), make_config(f"method={m}")) for d in ("glue_rte", "sst2")
             for m in ("full", "prefix")]  # fmt: skip
    chosen = [point(lr, 0.8, 10.0, epochs) for lr, epochs in ((2e-4, 3.0), (2e-2, 6.0), (1e-4, 3.0), (5e-2, 3.0))]
    text = recipes_text(entries_of(cells, chosen), command="python -m ptexp.study experiment=x", parent="abc")
    assert "#   glue_rte/prefix: optimizer.lr=0.02 trainer.epochs=6.0" in text
    tables = OmegaConf.create(text)
    cfg = make_config("data=glue_rte", "method=prefix")
    with open_dict(cfg):
        OmegaConf.update(cfg, "optimizer.task_lr", tables.optimizer.task_lr, merge=True)
        OmegaConf.update(cfg, "trainer.task_epochs", tables.trainer.task_epochs, merge=True)
    use_method_epochs(cfg)  # as the trainer applies a preset's tables
    assert (cfg.optimizer.lr, cfg.trainer.epochs) == (2e-2, 6.0)
    two_models = [Cell((("model", m), ("method", "full")), make_config()) for m in ("tiny", "minilm")]
    text = recipes_text(entries_of(two_models, chosen[:2]), command="c", parent="p")
    assert "no per-task tables" in text and OmegaConf.create(text).cells["minilm/full"].recipe["optimizer.lr"] == 2e-2


def test_a_narrowed_study_merges_its_recipes_into_the_earlier_ones(tmp_path):
    """Two invocations that each run one task of a study (data=glue_rte, then data=sst2) leave one file with both
    tasks' tables; a re-chosen cell takes the latest recipe; two models of one task and method drop the tables."""
    path = tmp_path / "recipes.yaml"
    cells = [Cell((("data", d), ("method", "full")), make_config()) for d in ("glue_rte", "sst2")]
    write_recipes(path, cells[:1], [point(2e-4, 0.8, 10.0, 3.0)], command="c1", parent="p1")
    write_recipes(path, cells[1:], [point(1e-4, 0.7, 10.0, 3.0)], command="c2", parent="p2")
    tables = OmegaConf.load(path)
    assert dict(tables.optimizer.task_lr) == {"glue_rte": {"full": 2e-4}, "sst2": {"full": 1e-4}}
    assert "#   c2" in path.read_text() and "#   c1" not in path.read_text()
    write_recipes(path, cells[:1], [point(5e-4, 0.9, 10.0, 3.0)], command="c3", parent="p3")
    assert OmegaConf.load(path).optimizer.task_lr.glue_rte.full == 5e-4
    other = Cell((("model", "tiny"), ("data", "glue_rte"), ("method", "full")), make_config())
    write_recipes(path, [other], [point(1e-3, 0.9, 10.0, 3.0)], command="c4", parent="p4")
    merged = OmegaConf.load(path)
    assert "optimizer" not in merged and set(merged.cells) == {"glue_rte/full", "sst2/full", "tiny/glue_rte/full"}


# ------------------------------------------------------------------------------------------ end to end (slow)
E2E = [*TINY, "method=full,prefix", GRID, "study.seeds=[1,2]", "trainer.max_steps=2", "study.budget.rule=steps"]


def start(out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ptexp.study", *E2E, f"output_root={out}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def job_runs(out: Path) -> list:
    return [r for r in runs_in(out / "mlflow.db") if "study_key" in r.data.tags]


@pytest.mark.slow
def test_a_study_killed_after_its_first_run_finishes_on_a_rerun_without_redoing_it(tmp_path, capsys):
    out = tmp_path / "out"
    process = start(out)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(1)
        if (out / "mlflow.db").is_file() and any(r.info.status == "FINISHED" for r in job_runs(out)):
            break
    process.send_signal(signal.SIGTERM)
    first, _ = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM, first[-3000:]
    assert "interrupted by SIGTERM" in first
    runs = runs_in(out / "mlflow.db")
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    done_before = {r.info.run_id for r in job_runs(out) if r.info.status == "FINISHED"}
    assert 1 <= len(done_before) < 4
    assert main([*E2E, f"output_root={out}", "--plan"]) == 0  # the re-run's plan: what is left, timed by what ran
    plan = capsys.readouterr().out
    assert f"grid: 4 runs ({len(done_before)} finished earlier)" in plan and "(0 finished earlier)" in plan
    assert f"jobs to run: {6 - len(done_before)}" in plan, plan
    assert "estimated from the wall time per step of their cells' finished runs" in plan, plan

    again = start(out)
    second, _ = again.communicate(timeout=900)
    assert again.returncode == 0, second[-3000:]
    finished = [r for r in job_runs(out) if r.info.status == "FINISHED"]
    identities = [(r.data.tags["ptexp.method"], r.data.params["optimizer.lr"], r.data.params["seed"]) for r in finished]
    assert len(identities) == len(set(identities)) == 6  # 2 methods x 2 rates (seed 1), + the chosen rate's seed 2
    assert done_before <= {r.info.run_id for r in finished}
    assert {(r.data.params["trainer.select_best"], r.data.params["trainer.eval_history"]) for r in finished} == {
        ("True", "False")
    }  # the selection split picks each run's epoch; the dev split is scored once, at the end
    runs = runs_in(out / "mlflow.db")
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    parents = [r for r in runs if r.data.tags.get("ptexp.study") == "parent"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    tags = parents[0].data.tags
    assert tags["study.full.chosen"].startswith("optimizer.lr=") and '"selection"' in tags["study.prefix.grid"]
    stages = {
        r.info.run_id: r.data.tags["ptexp.study_stage"] for r in runs if r.data.tags.get("ptexp.study") == "stage"
    }
    assert sorted(stages.values()) == ["grid", "seeds"]
    assert all(r.data.tags["mlflow.parentRunId"] in stages for r in finished)
    shown = subprocess.run([sys.executable, "-m", "ptexp.report", "--output-root", str(out), "--study", "--no-attach"],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert "each cell's chosen recipe, every seed: 4 finished run(s)" in shown.stdout  # 2 methods x seeds 1, 2
    assert " / full: recipe=optimizer.lr=" in shown.stdout, shown.stdout[-3000:]
    assert "budget=steps <= " in shown.stdout, shown.stdout[-3000:]
    recipes = OmegaConf.create((out / "studies" / tags["ptexp.study_key"] / "recipes.yaml").read_text())
    assert recipes.optimizer.task_lr.embedded.full == float(tags["study.full.chosen"].split()[0].split("=")[1])

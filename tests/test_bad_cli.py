"""Issue 22's command-line half: task keys that name no task, dict-typed keys given a list, a sweep preset without
``-m``, a sweep whose every job fails its checks, ``ptexp.report``'s and ``ptexp.evaluate``'s bad arguments and
files, and the adapter's file modes. Each mistake must give exit 2, one ``error:`` line and leave nothing behind.

The config cases run in-process along the CLI's path (``first_error`` of test_bad_keys.py), the report and evaluate
cases through their ``main()``; a few go through the real command line (a subprocess each, 1 to 5 s).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time

import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from torch import nn

from ptexp import evaluate
from ptexp.adapters import META, WEIGHTS, read_adapter, save_adapter
from ptexp.checks import data_presets
from ptexp.experiment import prepare_config, use_method_epochs
from ptexp.report.__main__ import main as report_main
from tests.conftest import make_config, run_cli
from tests.test_bad_input import assert_clean_failure, assert_nothing_half_written, write_files
from tests.test_bad_keys import first_error

TASKS = "glue_rte, glue_sst2, glue_stsb, glue_wnli, sst2"

# key=value arguments (on model=tiny) -> what the one line must contain
CONFIG_CASES = {
    "task_lr_task_typo": (["+optimizer.task_lr.glue_rtee.full=1e-3"], ["optimizer.task_lr.glue_rtee", TASKS]),
    "task_epochs_task_typo": (["+trainer.task_epochs.sst3.full=2"], ["trainer.task_epochs.sst3: unknown task"]),
    "task_lr_method_typo": (["+optimizer.task_lr.glue_sst2.fulll=1e-3"], ["task_lr.glue_sst2.fulll: unknown method"]),
    "task_lr_one_task_twice": (
        ["+optimizer.task_lr.sst2.full=1e-3", "+optimizer.task_lr.glue_sst2.full=2e-3"],
        ["optimizer.task_lr.glue_sst2.full: 0.002 differs from optimizer.task_lr.sst2.full=0.001", "data.name sst2"],
    ),
    "task_lr_a_list": (["optimizer.task_lr=[1,2]"], ["optimizer.task_lr: [1, 2]", "a mapping {task: {method: lr}}"]),
    "task_lr_a_number": (["optimizer.task_lr=3"], ["optimizer.task_lr: 3 ", "{task: {method: lr}}"]),
    "task_lr_entry_a_number": (
        ["+optimizer.task_lr.glue_rte=3"],
        ["optimizer.task_lr.glue_rte: 3 ", "optimizer.task_lr is a mapping {task: {method: lr}}"],
    ),
    "method_epochs_a_list": (["trainer.method_epochs=[1]"], ["trainer.method_epochs: [1]", "{method: epochs}"]),
    "method_epochs_null": (["trainer.method_epochs=null"], ["trainer.method_epochs: None", "{method: epochs}"]),
    "task_epochs_a_list": (["trainer.task_epochs=[1]"], ["trainer.task_epochs: [1]", "{task: {method: epochs}}"]),
    "config_overrides_a_list": (["model.config_overrides=[1]"], ["model.config_overrides: [1]", "{HF config key"]),
    "file_columns_a_list": (["data.file_columns=[a]"], ["data.file_columns", "a mapping of text_column"]),
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("bad_cli")


@pytest.fixture(scope="module")
def empty_store(folder):
    """A new SQLite store without experiments, made once: creating one takes MLflow seconds, copying it none."""
    path = folder / "empty" / "mlflow.db"
    path.parent.mkdir()
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def store_in(root, empty_store) -> MlflowClient:
    """A client of a new store at ``root/mlflow.db`` (where ``output_root=root`` puts it)."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(empty_store, root / "mlflow.db")
    return MlflowClient(f"sqlite:///{root / 'mlflow.db'}")


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_a_bad_task_table_or_mapping_gives_one_line(case, folder):
    args, needles = CONFIG_CASES[case]
    line = first_error(args, folder)
    assert len(line.splitlines()) == 1 and line.startswith("error: ") and "; valid: " in line, line
    for needle in needles:
        assert needle in line, line


@pytest.mark.parametrize(
    ("data", "key", "lr"),
    [
        ("glue_sst2", "glue_sst2", 0.5),
        ("glue_sst2", "sst2", 0.5),
        ("sst2", "glue_sst2", 0.5),
        ("glue_rte", "sst2", None),
    ],
)
def test_a_task_key_may_be_the_preset_or_its_data_name(data, key, lr, capsys):
    cfg = make_config("model=tiny", f"data={data}", f"+optimizer.task_lr.{key}.full={lr or 0.5}")
    cfg.data.data_dir = "/data"  # not read here
    default = cfg.optimizer.lr
    prepare_config(cfg)
    use_method_epochs(cfg)
    assert cfg.optimizer.lr == (lr or default)
    assert (f"optimizer.task_lr.{key}.full=0.5 replaces" in capsys.readouterr().err) == (lr is not None)


def test_the_preset_names_are_what_hydra_composes():
    presets = data_presets()
    assert presets["glue_sst2"] == "sst2" and presets["glue_rte"] == "glue_rte"
    for name in ("glue_sst2", "superglue_cb", "files"):
        assert make_config(f"data={name}").data.name == presets[name]


# Through the real command line: exit 2, one error line, no run, no run folder. {D}: write_files' broken files.
CLI_CASES = {
    "sweep_preset_without_m": (["experiment=glue_compare"], ["experiment=glue_compare", "needs -m", "-m experiment"]),
    "optuna_preset_without_m": (["hparams_search=prefix_optuna"], ["hparams_search=prefix_optuna", "needs -m"]),
    "task_lr_a_list": (["optimizer.task_lr=[1,2]"], ["optimizer.task_lr", "{task: {method: lr}}"]),
    "sweep_every_job_fails_a_check": (["-m", "method=full,prefix", "trainer.epochs=0"], ["trainer.epochs: 0"]),
    "sweep_every_job_fails_its_data": (
        ["-m", "data=files", "data.train_file={D}/badlabel.csv", "data.eval_file={D}/good.csv", "method=full,prefix"],
        ["badlabel.csv line 3"],
    ),
    "glue_compare_data_root_missing": (
        ["-m", "experiment=glue_compare", "data.root=/nonexistent/glue", "data=glue_rte", "method=full", "seed=1"],
        ["/nonexistent/glue"],
    ),
    "task_lr_task_typo": (["+optimizer.task_lr.glue_rtee.full=1e-3"], ["optimizer.task_lr.glue_rtee", TASKS]),
}
SLOW = {"sweep_every_job_fails_its_data", "glue_compare_data_root_missing", "task_lr_task_typo"}  #


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in CLI_CASES])
def test_through_the_command_line_exit_2_one_line_and_nothing_left(case, folder, empty_store):
    args, needles = CLI_CASES[case]
    write_files(folder / "files")
    root = folder / case
    if "-m" in args:
        store_in(root, empty_store)  # the sweep's parent run goes there
    args = [a.replace("{D}", str(folder / "files")) for a in args]
    started = time.perf_counter()
    proc = run_cli(*args, "model=tiny", "trainer.progress=false", "trainer.max_steps=2", f"output_root={root}")
    assert_clean_failure(proc, time.perf_counter() - started, *needles)
    assert_nothing_half_written(root)
    if (root / "mlflow.db").exists():  # not even a deleted sweep parent run
        client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
        experiments = [e.experiment_id for e in client.search_experiments()]
        assert client.search_runs(experiments, run_view_type=ViewType.ALL) == []
    assert not (root / "multiruns").exists() and not (root / "runs").exists()


def call(main, argv: list[str], capsys) -> tuple[int, str, str]:
    """``main(argv)`` in-process: (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


def one_error_line(status: int, err: str, *needles: str) -> None:
    assert status == 2, err
    (line,) = err.strip().splitlines()
    assert line.startswith("error: ") and "; valid: " in line, line
    for needle in needles:
        assert needle in line, line


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--sweep-id", "nope"], ["--sweep-id: no such option (did you mean --sweep?)", "--latest-sweep"]),
        (["--sweep-id=nope"], ["--sweep-id: no such option (did you mean --sweep?)"]),
        (["--sweep"], ["argument --sweep: expected one argument", "--help"]),
        (["--all", "--sweep", "x"], ["not allowed with argument --all"]),
        (["nope"], ["nope: unexpected argument"]),
        (["--out", "{F}"], ["--out", "is a file", "a folder that can be written"]),
        (["--out", "{F}/sub"], ["--out", "is a file"]),
    ],
)
def test_report_usage_mistakes_give_one_error_line(args, needles, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    argv = ["--output-root", str(tmp_path / "nowhere"), *(a.replace("{F}", str(tmp_path / "file")) for a in args)]
    one_error_line(*call(report_main, argv, capsys)[::2], *needles)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def log_sweep(client: MlflowClient, experiment: str, started: int, children: list[str]) -> str:
    """A sweep parent run with one child per status in ``children``; returns the parent's id."""
    tags = {"ptexp.sweep": "parent"}
    parent = client.create_run(experiment, run_name=f"sweep {started}", tags=tags, start_time=started).info.run_id
    for seed, status in enumerate(children):
        tags = {"mlflow.parentRunId": parent, "ptexp.method": "full", "ptexp.model": "tiny", "ptexp.data": "embedded"}
        child = client.create_run(experiment, run_name=f"child {seed}", tags=tags, start_time=started + 1).info.run_id
        client.log_param(child, "seed", str(seed))
        client.log_metric(child, "eval/accuracy", 0.75, step=1)
        client.set_terminated(child, status)
    client.set_terminated(parent, "FINISHED" if "FINISHED" in children else "FAILED")
    return parent


def test_report_falls_back_to_the_newest_sweep_with_finished_runs_and_says_so(tmp_path, capsys, empty_store):
    client = store_in(tmp_path, empty_store)
    experiment = client.create_experiment("ptexp", artifact_location=(tmp_path / "mlartifacts").as_uri())
    good = log_sweep(client, experiment, 1_000_000, ["FINISHED"])
    log_sweep(client, experiment, 3_000_000, ["FAILED"])
    empty = log_sweep(client, experiment, 4_000_000, [])
    root = ["--output-root", str(tmp_path), "--no-attach"]

    status, out, err = call(report_main, root, capsys)
    assert status == 0, err
    notes = [line for line in out.splitlines() if "has no finished run" in line]
    assert len(notes) == 1 and empty in notes[0], out
    assert f"[report] sweep 'sweep 1000000' ({good}): 1 finished run(s)" in out, out

    status, _, err = call(report_main, [*root, "--latest-sweep"], capsys)  # asked for the newest: no fallback
    assert status == 1 and "matched no run" in err


def test_report_sweep_errors_name_valid_ids(tmp_path, capsys, empty_store):
    client = store_in(tmp_path, empty_store)
    experiment = client.create_experiment("ptexp", artifact_location=(tmp_path / "mlartifacts").as_uri())
    parent = log_sweep(client, experiment, 1_000_000, ["FINISHED"])
    (child,) = [r.info.run_id for r in client.search_runs([experiment]) if r.info.run_id != parent]
    root = ["--output-root", str(tmp_path)]
    one_error_line(*call(report_main, [*root, "--sweep", "0123"], capsys)[::2], "--sweep: no run '0123'", parent)
    one_error_line(*call(report_main, [*root, "--sweep", child], capsys)[::2], "not a sweep's parent run", parent)


def linear_adapter():
    """What a method exports, for a small stand-in model."""
    from ptexp.adapters import Exported

    return Exported({name: t.detach().clone() for name, t in nn.Linear(2, 2).state_dict().items()})


@pytest.fixture
def adapter_dir(tmp_path):
    """An adapter folder as a run writes it (the tensors of a small stand-in model), under umask 022."""
    cfg = make_config("model=tiny")
    old = os.umask(0o022)
    try:
        return save_adapter(linear_adapter(), cfg, tmp_path / "adapter", "f" * 64, ["model=tiny"], ["a", "b"], {})
    finally:
        os.umask(old)


def test_adapter_files_get_the_modes_the_umask_gives(adapter_dir, tmp_path):
    modes = {name: stat.S_IMODE((adapter_dir / name).stat().st_mode) for name in (META, WEIGHTS)}
    assert modes == {META: 0o644, WEIGHTS: 0o644}
    old = os.umask(0o077)
    try:
        again = save_adapter(linear_adapter(), make_config("model=tiny"), tmp_path / "private", "f", [], ["a", "b"], {})
    finally:
        os.umask(old)
    assert {stat.S_IMODE((again / name).stat().st_mode) for name in (META, WEIGHTS)} == {0o600}


@pytest.mark.parametrize(
    ("broken", "needles"),
    [
        ({META: b"{not json"}, [f"{META} is not JSON", "Expecting property name"]),
        ({META: b"\xff\xfe"}, [f"{META} is not JSON"]),
        ({META: b"{}"}, [f"{META} lacks method, base_model, overrides, label_names"]),
        ({META: b"[]"}, [f"{META} lacks method"]),
        ({META: json.dumps({"base_model": {}}).encode()}, ["lacks method", "base_model.fingerprint"]),
        ({WEIGHTS: "cut"}, [f"{WEIGHTS} cannot be read", "header"]),
        ({WEIGHTS: b""}, [f"{WEIGHTS} cannot be read"]),
    ],
)
def test_evaluate_a_corrupt_or_incomplete_adapter_gives_one_error_line(adapter_dir, broken, needles, capsys):
    for name, content in broken.items():
        path = adapter_dir / name
        path.write_bytes(path.read_bytes()[:100] if content == "cut" else content)
    status, _, err = call(evaluate.main, [str(adapter_dir)], capsys)
    one_error_line(status, err, str(adapter_dir.resolve()), *needles)


def test_the_intact_adapter_reads_back(adapter_dir):
    meta, tensors = read_adapter(adapter_dir)  # so that each case above fails by what it broke
    assert meta["overrides"] == ["model=tiny"] and set(tensors) == {"weight", "bias"}

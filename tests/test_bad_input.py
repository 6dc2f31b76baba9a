"""Bad input through the real command line (``python -m ptexp`` in a subprocess): each must exit with status 2
within seconds, print one short ``error: KEY: problem; valid: ...`` line that names the key or file, show no
traceback, and leave nothing half-written: no MLflow run (so none RUNNING), no run folder with results.

The cases run as subprocesses three at a time (the machine has few cores); each test checks its own. Mistakes
caught before torch is imported (options, types, keys, trainer/tracking settings, an unreachable server,
``trainer.resume``) take about 0.4 s; the others 5 to 8 s, mostly importing torch and transformers.
"""

from __future__ import annotations

import socket
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import run_cli, runs_in

MAX_SECONDS = 45  # per case, on a busy 2-core machine with three cases at a time; typically 0.3 s to 8 s


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_files(folder: Path) -> None:
    """The broken inputs the cases point at ({D} in their arguments)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "good.csv").write_text("sentence,label\ngreat film,1\ndull film,0\n")
    (folder / "wrongcols.csv").write_text("text,label\ngreat film,1\n")
    (folder / "badlabel.csv").write_text("sentence,label\ngreat film,positive\nodd film,maybe\n")
    (folder / "empty.csv").write_text("")
    (folder / "header.csv").write_text("sentence,label\n")
    (folder / "latin1.tsv").write_bytes("sentence\tlabel\ncaf\xe9 au lait\t1\n".encode("latin-1"))
    (folder / "broken.jsonl").write_text('{"sentence": "fine", "label": 1}\n{"sentence": "cut short\n')
    (folder / "table.parquet").write_bytes(b"PAR1")
    (folder / "nomodel").mkdir(exist_ok=True)
    (folder / "notamodel").mkdir(exist_ok=True)
    (folder / "notamodel" / "config.json").write_text('{"these": "are not model settings"}')
    (folder / "runwithout").mkdir(exist_ok=True)
    (folder / "corrupt").mkdir(exist_ok=True)
    (folder / "corrupt" / "ckpt.pt").write_bytes(b"not a checkpoint, cut short by a kill")


FILES = ["data=files", "data.eval_file={D}/good.csv"]

# id: (arguments, what the message must contain). {D} is the folder of broken files, {PORT} a closed port.
CASES = {
    # unknown options and keys
    "unknown_method": (["method=nope"], ["method=nope", "no such option", "full", "prefix"]),
    "unknown_method_in_sweep": (["-m", "method=full,nope"], ["method=nope", "no such option"]),
    "unknown_data": (["data=nope"], ["data=nope", "embedded", "sst2"]),
    "unknown_launcher": (["-m", "hydra/launcher=nope"], ["hydra/launcher=nope", "basic, joblib"]),
    "unknown_key": (["optimizer.learning_rate=0.1"], ["optimizer.learning_rate", "no such key", "lr"]),
    # wrong types and values
    "lr_not_a_number": (["optimizer.lr=abc"], ["optimizer.lr", "'abc'", "a number"]),
    "lr_negative": (["optimizer.lr=-1"], ["optimizer.lr", "positive"]),
    "prefix_length_negative": (["method=prefix", "prefix_length=-1"], ["prefix_length", "negative", ">= 0"]),
    "prefix_length_fraction": (["method=prefix", "prefix_length=1.5"], ["prefix_length", "1.5", "an integer"]),
    "prefix_beyond_positions": (
        ["method=prefix", "prefix_length=500", "prefix.shift_positions=true"],  # unshifted, P takes no positions
        ["prefix_length", "512 positions", "prefix_length <= 448"],
    ),
    "pooling_choice": (["model.pooling=max"], ["model.pooling", "'max'", "cls, mean"]),
    "bool_not_bool": (["trainer.progress=maybe"], ["trainer.progress", "true or false"]),
    "batch_size_zero": (["trainer.batch_size=0"], ["trainer.batch_size", ">= 1"]),
    "device_unknown": (["trainer.device=tpu"], ["trainer.device", "auto, cpu"]),
    "checkpoint_every_negative": (["trainer.checkpoint_every=-1"], ["trainer.checkpoint_every", "step count"]),
    # issue 14: values that escaped as tracebacks (PEFT) or a ValueError, and the data keys of the tasks work
    "classifier_dropout_above_one": (["model.classifier_dropout=1.5"], ["model.classifier_dropout", "0 <= p < 1"]),
    "lora_targets_match_nothing": (
        ["method=lora", "lora.target_modules=[nope]"],
        ["lora.target_modules", "['nope'] matches no module of BertModel", "query, key, value, dense"],
    ),
    "ia3_targets_match_nothing": (
        ["method=ia3", "ia3.target_modules=[nope]"],
        ["ia3.target_modules", "matches no module of BertModel", "query, key, value, dense"],
    ),
    "ia3_feedforward_not_in_targets": (
        ["method=ia3", "ia3.feedforward_modules=[query]"],
        ["ia3.feedforward_modules", "['query'] not in ia3.target_modules", "subset"],
    ),
    "adalora_schedule_longer_than_the_run": (
        ["method=adalora", "adalora.tinit=1000"],  # checked against the run's step count, before it is tracked
        ["adalora.tinit", "no step to prune ranks in the run's 30 steps", "adalora.tinit + adalora.tfinal < 30"],
    ),
    "data_metric_unknown": (["data.metrics=[nope]"], ["data.metrics", "'nope'", "accuracy, f1, macro_f1, mcc"]),
    "selection_rows_and_fraction": (
        ["data.selection_rows=5", "data.selection_fraction=0.1"],
        ["data.selection_rows", "only one of them"],
    ),
    "select_best_without_selection": (
        ["trainer.select_best=true"],
        ["trainer.select_best", "needs a selection split", "data.selection_rows"],
    ),
    "tracking_uri_unknown_scheme": (["tracking.uri=nope://x"], ["tracking.uri", "nope://x", "tracking.enabled=false"]),
    "output_root_cannot_be_made": (["output_root=/proc/ptexp"], ["output_root", "cannot create", "/proc/ptexp"]),
    "artifact_root_cannot_be_made": (
        ["tracking.artifact_root=/proc/ptexp/a"],
        ["tracking.artifact_root", "cannot create"],
    ),
    # data files
    "data_dir_missing": (["data=sst2", "data.data_dir=/nonexistent/sst2"], ["data.data_dir", "does not exist"]),
    "data_file_missing": ([*FILES, "data.train_file={D}/none.csv"], ["data.train_file", "file not found", "none.csv"]),
    "data_file_not_set": (["data=files"], ["data.train_file", "required", ".csv"]),
    "wrong_columns": (
        [*FILES, "data.train_file={D}/wrongcols.csv"],
        ["data.text_column", "wrongcols.csv", "columns found: text, label"],
    ),
    "label_outside_set": (
        [*FILES, "data.train_file={D}/badlabel.csv"],
        ["badlabel.csv line 3", "'maybe'", "valid: 0..1 or negative, positive"],
    ),
    "empty_file": ([*FILES, "data.train_file={D}/empty.csv"], ["data.train_file", "empty.csv", "no data rows"]),
    "header_only_file": ([*FILES, "data.train_file={D}/header.csv"], ["header.csv", "no data rows"]),
    "non_utf8_bytes": ([*FILES, "data.train_file={D}/latin1.tsv"], ["data.train_file", "latin1.tsv", "not UTF-8"]),
    "broken_jsonl": ([*FILES, "data.train_file={D}/broken.jsonl"], ["broken.jsonl line 2", "not JSON"]),
    "unknown_file_type": (
        [*FILES, "data.train_file={D}/table.parquet"],
        ["data.train_file", ".parquet", ".tsv, .csv, .jsonl"],
    ),
    # models
    "model_folder_without_config": (
        ["model.name_or_path={D}/nomodel"],
        ["model.name_or_path", "not a Hugging Face model folder"],
    ),
    "model_folder_not_a_model": (["model.name_or_path={D}/notamodel"], ["model.name_or_path", "notamodel", "Valid"]),
    "model_hub_id_unknown": (
        ["model.name_or_path=no-such-org/no-such-model-xyz"],
        ["model.name_or_path", "no-such-org/no-such-model-xyz"],
    ),
    # tracking
    "tracking_server_unreachable": (
        ["tracking.uri=http://127.0.0.1:{PORT}"],
        ["tracking.uri", "cannot reach", "tracking.enabled=false"],
    ),
    "tracking_sqlite_unwritable": (["tracking.uri=sqlite:////proc/ptexp/mlflow.db"], ["tracking.uri", "/proc/ptexp"]),
    "tracking_experiment_empty": (["tracking.experiment= "], ["tracking.experiment", "non-empty"]),
    # resume
    "resume_nothing_to_resume": (["trainer.resume=true"], ["trainer.resume", "no run folder with a checkpoint"]),
    "resume_no_such_path": (["trainer.resume=/nonexistent/run"], ["trainer.resume", "neither a folder nor"]),
    "resume_folder_without_checkpoint": (["trainer.resume={D}/runwithout"], ["trainer.resume", "holds no checkpoint"]),
    "resume_corrupt_checkpoint": (["trainer.resume={D}/corrupt"], ["trainer.resume", "not a readable checkpoint"]),
    "resume_unknown_run_id": (["trainer.resume=" + "deadbeef" * 4], ["trainer.resume", "no MLflow run"]),
}


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory):
    """Start every selected case at once (three at a time); each test waits for its own."""
    folder = tmp_path_factory.mktemp("bad_input")
    write_files(folder / "files")
    port = closed_port()
    selected = {item.callspec.id for item in request.session.items if hasattr(item, "callspec")}

    def run(case: str):
        args, _ = CASES[case]
        args = [a.replace("{D}", str(folder / "files")).replace("{PORT}", str(port)) for a in args]
        root = folder / case
        started = time.perf_counter()
        own_root = [] if any(a.startswith("output_root=") for a in args) else [f"output_root={root}"]
        proc = run_cli(*args, "model=tiny", "trainer.progress=false", *own_root, timeout=120)
        return proc, time.perf_counter() - started, root

    pool = ThreadPoolExecutor(max_workers=3)
    futures: dict[str, Future] = {case: pool.submit(run, case) for case in CASES if case in selected}
    yield futures
    pool.shutdown(wait=True)


def assert_clean_failure(proc, seconds: float, *needles: str) -> None:
    """Exit 2, one short error line naming what was wrong, no traceback, fast."""
    err = proc.stderr.strip()
    assert proc.returncode == 2, err
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) <= 2 and lines[-1].startswith("error: "), err
    assert len(lines[-1]) <= 400, err
    for needle in needles:
        assert needle in err, err
    assert seconds < MAX_SECONDS, f"took {seconds:.1f}s"


def assert_nothing_half_written(root: Path) -> None:
    """No MLflow run at all (so none RUNNING), and no run folder with a checkpoint, metrics or results."""
    store = root / "mlflow.db"
    if store.exists():
        assert runs_in(store) == []
    leftovers = [p for p in root.rglob("*") if p.is_file() and p.name != "mlflow.db"]
    assert leftovers == [], leftovers


# More of the same kinds, run by `make test-slow`; the default suite keeps 30 cases (each a real subprocess).
SLOW = {
    "ia3_feedforward_not_in_targets",
    "tracking_uri_unknown_scheme",
    "output_root_cannot_be_made",
    "artifact_root_cannot_be_made",
    "lr_negative",
    "device_unknown",
    "data_file_missing",
    "data_file_not_set",
    "header_only_file",
    "broken_jsonl",
    "unknown_file_type",
    "model_folder_without_config",
    "model_hub_id_unknown",
    "tracking_sqlite_unwritable",
    "resume_corrupt_checkpoint",
    "resume_unknown_run_id",
}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in CASES])
def test_bad_input_exits_2_fast_with_one_short_line_and_leaves_nothing(outcomes, case):
    proc, seconds, root = outcomes[case].result()
    assert_clean_failure(proc, seconds, *CASES[case][1])
    assert_nothing_half_written(root)


def test_at_least_twenty_bad_inputs_run_in_the_default_suite():
    assert len(CASES) - len(SLOW) >= 20 and SLOW.issubset(CASES)


def _check_after_barrier(args: tuple[str, object]) -> str | None:
    from ptexp.checks import folder_problem

    folder, barrier = args
    barrier.wait()
    return folder_problem(folder)


def test_the_folder_check_holds_when_processes_race_on_the_same_new_folder(tmp_path):
    # torchrun's ranks check output_root at the same moment; CI once saw rank 0 fail with "File exists"
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    with ctx.Manager() as manager, ctx.Pool(8) as pool:
        for round_ in range(10):
            barrier = manager.Barrier(8)
            folder = str(tmp_path / f"r{round_}" / "a" / "b")
            assert pool.map(_check_after_barrier, [(folder, barrier)] * 8) == [None] * 8
            left = [p for p in (tmp_path / f"r{round_}").rglob("*") if p.is_file()]
            assert left == []  # at most empty folders on the path (the run makes it next anyway)
    (tmp_path / "file").write_text("x")
    from ptexp.checks import folder_problem

    blocked = tmp_path / "file" / "sub"
    assert folder_problem(str(blocked)) == f"cannot create {str(blocked)!r} ({tmp_path / 'file'} is a file)"
    assert folder_problem(str(tmp_path / "new" / "sub")) is None and not (tmp_path / "new").exists()

"""Faults injected into real runs: SIGTERM / SIGINT / a crash mid-checkpoint, resume, a diverging loss, a tracking
store that goes away (patched in-process, and a real ``mlflow server`` stopped and restarted), parallel sweeps.

Subprocess runs slow their steps down (a sleep wrapped around ``clip_grad_norm_``, see :func:`slowed_cli`) so
that a signal surely lands mid-run; nothing else about the CLI changes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ptexp import checkpoint as ckpt
from ptexp.checkpoint import CKPT, load_checkpoint
from ptexp.store import sync_run_dir
from ptexp.trainer import run_experiment
from tests.conftest import ROOT, TINY, run_cli, runs_in

# 160 rows / batch 8 = 20 steps an epoch, 2 epochs: 40 steps, a checkpoint every 5, an eval every 10.
LONG = [
    "model=tiny",
    "trainer.progress=false",
    "trainer.epochs=2",
    "trainer.batch_size=8",
    "data.max_train_samples=160",
    "data.max_eval_samples=32",
    "trainer.log_every=1",
    "trainer.eval_every=10",
    "trainer.checkpoint_every=5",
    "trainer.threads=1",
]
STEP_DELAY = 0.1  # seconds added to each step of a slowed subprocess


def slowed_cli(*args: str, delay: float = STEP_DELAY, env: dict | None = None) -> subprocess.Popen:
    """``python -m ptexp ARGS`` as a real process, each training step made ``delay`` seconds longer."""
    code = (
        "import runpy, time, torch.nn.utils as u\n"
        "clip = u.clip_grad_norm_\n"
        f"u.clip_grad_norm_ = lambda *a, **k: (time.sleep({delay}), clip(*a, **k))[1]\n"
        "runpy.run_module('ptexp', run_name='__main__', alter_sys=True)\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})},
    )


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"the process ended (rc {proc.returncode}) before {what}: {proc.stderr.read()[-3000:]}"
            )
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def history(run_dir: Path) -> list[dict]:
    """metrics.jsonl without what depends on the clock (timestamps, speed, times)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    clock = ("timestamp", "train/samples_per_s", "time/", "throughput/", "memory/", "infer/")
    return [{k: v for k, v in row.items() if not k.startswith(clock)} for row in rows]


def mlflow_history(store: Path, run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store}")
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


# ---------------------------------------------------------------------------------------------------------------
# Signals and resume, through the real command line


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """An uninterrupted run ``a`` and a run ``b`` stopped by SIGTERM after its first checkpoint (same config)."""
    root = tmp_path_factory.mktemp("resume")
    args = [*LONG, f"output_root={root}"]
    proc = slowed_cli(*args, f"hydra.run.dir={root / 'b'}")
    wait_for(lambda: (root / "b" / CKPT).exists(), 180, "the first checkpoint", proc)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    exit_seconds = time.monotonic() - sent
    a = run_cli(*args, f"hydra.run.dir={root / 'a'}", timeout=300)
    assert a.returncode == 0, a.stderr[-3000:]
    return {"root": root, "rc": proc.returncode, "stderr": err, "exit_seconds": exit_seconds}


def test_sigterm_mid_run_marks_the_run_killed_writes_a_checkpoint_and_exits_promptly(interrupted):
    root = interrupted["root"]
    assert interrupted["rc"] == 128 + signal.SIGTERM, interrupted["stderr"][-3000:]
    assert interrupted["exit_seconds"] < 15, interrupted["exit_seconds"]
    assert "interrupted by SIGTERM: the run is marked KILLED" in interrupted["stderr"]
    assert f"trainer.resume={root / 'b'}" in interrupted["stderr"]
    assert "Traceback" not in interrupted["stderr"]
    state = load_checkpoint(root / "b")
    assert 5 <= state["loop"]["step"] < 40
    assert not (root / "b" / ckpt.TMP).exists()
    (run,) = [r for r in runs_in(root / "mlflow.db") if r.data.tags["ptexp.run_dir"] == str(root / "b")]
    assert run.info.status == "KILLED" and run.info.run_id == state["meta"]["run_id"]
    assert "Interrupted: SIGTERM" in run.data.tags["ptexp.error"]


def test_resume_after_sigterm_continues_the_same_run_and_equals_an_uninterrupted_run_exactly(interrupted):
    root = interrupted["root"]
    killed_at = load_checkpoint(root / "b")["loop"]["step"]
    proc = run_cli(*LONG, f"output_root={root}", f"trainer.resume={root / 'b'}", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resuming {root / 'b'} at step {killed_at}" in proc.stdout
    assert "changing param values is not allowed" not in proc.stderr.lower()
    assert history(root / "b") == history(root / "a")  # every train loss, lr and eval, step by step
    runs = {r.data.tags["ptexp.run_dir"]: r for r in runs_in(root / "mlflow.db")}
    assert set(runs) == {str(root / "a"), str(root / "b")}  # resumed into the same MLflow run, no third one
    a, b = runs[str(root / "a")], runs[str(root / "b")]
    assert b.info.status == "FINISHED" and b.data.tags["ptexp.resumed_at_step"] == str(killed_at)
    evals = {k: v for k, v in a.data.metrics.items() if k.startswith("eval/")}
    assert evals and evals == {k: v for k, v in b.data.metrics.items() if k.startswith("eval/")}
    for key in ("train/loss", "eval/loss", "eval/accuracy"):
        assert mlflow_history(root / "mlflow.db", b.info.run_id, key) == mlflow_history(
            root / "mlflow.db", a.info.run_id, key
        )
    assert len(mlflow_history(root / "mlflow.db", b.info.run_id, "train/loss")) == 40
    assert not (root / "b" / CKPT).exists() and (root / "b" / "result.json").exists()
    assert not list((root / "runs").glob("*/*")) if (root / "runs").exists() else True  # no stray folder


@pytest.mark.slow
def test_sigint_mid_run_marks_the_run_killed_and_leaves_a_resumable_checkpoint(tmp_path):
    proc = slowed_cli(*LONG, f"output_root={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}")
    wait_for(lambda: (tmp_path / "run" / CKPT).exists(), 180, "the first checkpoint", proc)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT, err[-3000:]
    assert time.monotonic() - sent < 15
    assert "interrupted by SIGINT" in err and "Traceback" not in err
    (run,) = runs_in(tmp_path / "mlflow.db")
    assert run.info.status == "KILLED"
    assert 5 <= load_checkpoint(tmp_path / "run")["loop"]["step"] < 40


@pytest.mark.slow  # the same in-process, in the default suite: tests/test_trainer.py::test_diverging_loss_...
def test_nan_loss_from_a_huge_learning_rate_stops_at_that_step_and_fails_the_run(tmp_path):
    proc = run_cli(
        *TINY,
        "optimizer.lr=1e12",
        "trainer.grad_clip=null",
        "optimizer.warmup_ratio=0",
        f"output_root={tmp_path}",
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert re.search(r"training diverged: loss became (nan|-?inf) at step \d+", line), line
    assert "lower optimizer.lr" in line
    (run,) = runs_in(tmp_path / "mlflow.db")
    assert run.info.status == "FAILED" and "TrainingDiverged" in run.data.tags["ptexp.error"]
    step = int(line.split("at step ")[1].split()[0])
    assert max(json.loads(x)["step"] for x in next(tmp_path.glob("runs/*/*/metrics.jsonl")).open()) < step


@pytest.mark.slow
def test_sigkill_loses_only_the_steps_since_the_last_checkpoint_and_sync_can_close_the_run(interrupted, tmp_path):
    root = interrupted["root"]  # run "a" there is the uninterrupted reference
    run_dir = tmp_path / "run"
    proc = slowed_cli(*LONG, f"output_root={tmp_path}", f"hydra.run.dir={run_dir}")
    wait_for(lambda: len(losses_so_far(run_dir)) >= 8, 180, "eight logged steps", proc)  # past the checkpoint at 5
    proc.kill()  # SIGKILL: no handler, no checkpoint, no final status
    proc.communicate(timeout=60)
    (run,) = runs_in(tmp_path / "mlflow.db")
    assert run.info.status == "RUNNING"  # nobody could tell MLflow
    sync = run_cli(str(run_dir), "--status", "KILLED", module="ptexp.sync", timeout=120)
    assert sync.returncode == 0, sync.stderr
    (run,) = runs_in(tmp_path / "mlflow.db")
    assert run.info.status == "KILLED"

    killed_at = load_checkpoint(run_dir)["loop"]["step"]
    assert killed_at % 5 == 0 and killed_at <= len(losses_so_far(run_dir))  # the steps after it run again
    proc = run_cli(*LONG, f"output_root={tmp_path}", f"trainer.resume={run_dir}", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    def same(rows):  # the adapter's size depends on output_root, which differs here
        return [{k: v for k, v in row.items() if k != "adapter/bytes"} for row in rows]

    assert same(history(run_dir)) == same(history(root / "a"))  # metrics.jsonl was cut back to the checkpoint
    (run,) = runs_in(tmp_path / "mlflow.db")
    (reference,) = [r for r in runs_in(root / "mlflow.db") if r.data.tags["ptexp.run_dir"] == str(root / "a")]
    assert run.info.status == "FINISHED"
    assert {k: v for k, v in run.data.metrics.items() if k.startswith("eval/")} == {
        k: v for k, v in reference.data.metrics.items() if k.startswith("eval/")
    }


@pytest.mark.slow
def test_a_sweep_stopped_by_sigterm_resumes_under_the_same_parent(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "method=full,prefix", *LONG, f"output_root={tmp_path}", f"hydra.sweep.dir={sweep}"]
    proc = slowed_cli(*args)
    wait_for(lambda: (sweep / "1_prefix" / CKPT).exists(), 300, "the second job's first checkpoint", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert f"trainer.resume=true hydra.sweep.dir={sweep}" in err
    statuses = {r.info.run_name: r.info.status for r in runs_in(tmp_path / "mlflow.db")}
    assert statuses == {
        "sweep sweep": "FAILED",
        "full-tiny-embedded-s42": "FINISHED",
        "prefix-P20-tiny-embedded-s42": "KILLED",
    }

    again = run_cli(*args, "trainer.resume=true", timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{sweep / '0_full'} already finished" in again.stdout and "resuming" in again.stdout
    runs = runs_in(tmp_path / "mlflow.db")
    (parent,) = [r for r in runs if r.data.tags.get("ptexp.sweep") == "parent"]
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in runs if r is not parent)


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints and resume, in-process (fast)


def losses(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["train/loss"]) for r in history(run_dir) if "train/loss" in r]


def test_a_crash_while_writing_a_checkpoint_leaves_the_previous_one_intact_and_resumable(
    tiny_config, tmp_path, monkeypatch
):
    overrides = ("trainer.batch_size=8", "trainer.log_every=1", "trainer.checkpoint_every=2")
    reference = run_experiment(tiny_config(*overrides), tmp_path / "a")

    import torch

    real_save, calls = torch.save, []

    def save_then_die(obj, f):  # the third checkpoint: half the bytes reach the disk, then the process "dies"
        calls.append(obj["loop"]["step"])
        if len(calls) == 3:
            f.write(b"\x80\x02partial")
            raise SystemExit("killed while writing")
        real_save(obj, f)

    monkeypatch.setattr(torch, "save", save_then_die)
    with pytest.raises(SystemExit):
        run_experiment(tiny_config(*overrides), tmp_path / "b")
    monkeypatch.setattr(torch, "save", real_save)
    assert calls == [2, 4, 6]
    assert (tmp_path / "b" / ckpt.TMP).exists()  # the torn write stayed in ckpt.tmp
    assert load_checkpoint(tmp_path / "b")["loop"]["step"] == 4
    (run,) = [r for r in runs_in(tmp_path / "outputs" / "mlflow.db") if r.data.tags["ptexp.run_dir"].endswith("/b")]
    assert run.info.status == "FAILED"

    resumed = run_experiment(tiny_config(*overrides, f"trainer.resume={tmp_path / 'b'}"), tmp_path / "c")
    # steps 5 and 6 ran again after the last good checkpoint; metrics.jsonl was cut back to it, so one row a step
    assert history(tmp_path / "b") == history(tmp_path / "a")
    assert {k: v for k, v in resumed.items() if k.startswith("eval/")} == {
        k: v for k, v in reference.items() if k.startswith("eval/")
    }
    assert not (tmp_path / "c").exists()  # the run continued in its own folder
    statuses = sorted(r.info.status for r in runs_in(tmp_path / "outputs" / "mlflow.db"))
    assert statuses == ["FINISHED", "FINISHED"]


def interrupt_at(monkeypatch, step: int) -> None:
    """Send this process SIGTERM right after ``step`` is logged (the trainer then checkpoints and stops)."""
    from ptexp.tracking import RunTracker

    real = RunTracker.log_metrics

    def log_metrics(self, metrics, at_step):
        real(self, metrics, at_step)
        if at_step == step and "train/loss" in metrics:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(RunTracker, "log_metrics", log_metrics)


def test_resume_true_and_resume_by_mlflow_run_id_continue_the_same_run(tiny_config, tmp_path, monkeypatch):
    overrides = ("method=prefix", "prefix_length=4", "trainer.batch_size=8", "trainer.log_every=1")
    reference = run_experiment(tiny_config(*overrides, "tracking.enabled=false"), tmp_path / "ref")
    with monkeypatch.context() as m:
        interrupt_at(m, 3)
        with pytest.raises(KeyboardInterrupt):
            run_experiment(tiny_config(*overrides), tmp_path / "outputs" / "runs" / "x" / "1")
    (killed,) = runs_in(tmp_path / "outputs" / "mlflow.db")
    assert killed.info.status == "KILLED"
    with monkeypatch.context() as m:  # resume=true finds the newest run folder with a checkpoint; stop it again
        interrupt_at(m, 5)
        with pytest.raises(KeyboardInterrupt):
            run_experiment(tiny_config(*overrides, "trainer.resume=true"), tmp_path / "outputs" / "runs" / "x" / "2")
    assert load_checkpoint(tmp_path / "outputs" / "runs" / "x" / "1")["loop"]["step"] == 5
    result = run_experiment(tiny_config(*overrides, f"trainer.resume={killed.info.run_id}"), tmp_path / "elsewhere")
    (run,) = runs_in(tmp_path / "outputs" / "mlflow.db")
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    assert run.data.params["optimizer.lr"] == "0.02"
    assert losses(tmp_path / "outputs" / "runs" / "x" / "1") == losses(tmp_path / "ref")
    assert result["eval/loss"] == reference["eval/loss"]
    again = run_experiment(tiny_config(*overrides, f"trainer.resume={killed.info.run_id}"), tmp_path / "again")
    assert again == result  # a finished run is not trained again


def test_resume_refuses_an_override_that_would_change_the_run(tiny_config, tmp_path, monkeypatch):
    from ptexp.errors import UserError

    with monkeypatch.context() as m:
        interrupt_at(m, 1)
        with pytest.raises(KeyboardInterrupt):
            run_experiment(tiny_config("trainer.batch_size=8", "trainer.log_every=1"), tmp_path / "run")
    resume = f"trainer.resume={tmp_path / 'run'}"
    with pytest.raises(UserError, match=r"optimizer.lr: the run being resumed used '0.0002', not '0.1'"):
        run_experiment(tiny_config(resume, "optimizer.lr=0.1"), tmp_path / "x", overrides=[resume, "optimizer.lr=0.1"])
    (run,) = runs_in(tmp_path / "outputs" / "mlflow.db")
    assert run.info.status == "KILLED"  # refused before the run was reopened


# ---------------------------------------------------------------------------------------------------------------
# A tracking store that goes away, in-process (a patched client)


class Outage:
    """Makes every MlflowClient call that writes or reads a run fail while ``down`` is true."""

    METHODS = ("create_run", "get_run", "update_run", "log_batch", "set_tag", "set_terminated", "log_artifact")

    def __init__(self, monkeypatch):
        from mlflow.tracking import MlflowClient

        self.down, self.failures = False, 0
        for name in (*self.METHODS, "log_artifacts", "get_metric_history"):
            real = getattr(MlflowClient, name)
            monkeypatch.setattr(MlflowClient, name, self._wrap(real))

    def _wrap(self, real):
        def call(client, *args, **kwargs):
            if self.down:
                self.failures += 1
                raise ConnectionError("store down (injected)")
            return real(client, *args, **kwargs)

        return call


def down_between(monkeypatch, outage: Outage, first: int, last: int | None) -> None:
    """The store goes down when step ``first`` is logged, and (``last``) comes back after that step."""
    from ptexp.tracking import RunTracker

    real = RunTracker.log_metrics

    def log_metrics(self, metrics, step):
        if step == first and "train/loss" in metrics:
            outage.down = True
        real(self, metrics, step)
        if last is not None and step == last and "train/loss" in metrics:
            outage.down = False

    monkeypatch.setattr(RunTracker, "log_metrics", log_metrics)


def assert_store_matches_local(store: Path, run_dir: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store}")
    run_id = json.loads((run_dir / "tracking.json").read_text())["run_id"]
    local = sorted(
        (key, row["step"], row["timestamp"], float(value))
        for row in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
        for key, value in row.items()
        if key not in ("step", "timestamp")
    )
    keys = {k for k, *_ in local}
    remote = sorted((k, m.step, m.timestamp, m.value) for k in keys for m in client.get_metric_history(run_id, k))
    assert remote == local  # every point, none twice


def test_store_down_mid_run_training_goes_on_and_sync_uploads_the_rest_once(tiny_config, tmp_path, monkeypatch, capsys):
    from ptexp import sync

    outage = Outage(monkeypatch)
    down_between(monkeypatch, outage, first=1, last=None)  # down from step 1 to the end of the run
    result = run_experiment(tiny_config("trainer.batch_size=8", "trainer.log_every=1"), tmp_path / "run")
    assert result["train/steps"] == 8 and outage.failures >= 1
    err = capsys.readouterr().err
    assert err.count("warning: MLflow store unreachable") == 1 and "python -m ptexp.sync" in err
    store = tmp_path / "outputs" / "mlflow.db"
    (run,) = runs_in(store)
    assert run.info.status == "RUNNING" and "eval/accuracy" not in run.data.metrics
    assert json.loads((tmp_path / "run" / "tracking.json").read_text())["status"] == "FINISHED"

    outage.down = False
    assert sync.main([str(tmp_path / "run")]) == 0
    assert "sent" in capsys.readouterr().out
    (run,) = runs_in(store)
    assert run.info.status == "FINISHED" and run.data.metrics["eval/accuracy"] == result["eval/accuracy"]
    assert_store_matches_local(store, tmp_path / "run")
    from mlflow.tracking import MlflowClient

    artifacts = {a.path for a in MlflowClient(f"sqlite:///{store}").list_artifacts(run.info.run_id)}
    assert {"adapter", "metrics.jsonl"} <= artifacts
    _, sent = sync_run_dir(tmp_path / "run")
    assert sent["metrics"] == 0 and sent["params"] == 0 and sent["created"] == 0  # idempotent
    assert_store_matches_local(store, tmp_path / "run")


def test_store_back_mid_run_the_tracker_catches_up_by_itself(tiny_config, tmp_path, monkeypatch, capsys):
    from ptexp import tracking

    monkeypatch.setattr(tracking, "RETRY_OFFLINE_S", (0, 0))  # retry at the next call
    outage = Outage(monkeypatch)
    down_between(monkeypatch, outage, first=2, last=4)
    run_experiment(tiny_config("trainer.batch_size=8", "trainer.log_every=1"), tmp_path / "run")
    assert "reachable again" in capsys.readouterr().err
    (run,) = runs_in(tmp_path / "outputs" / "mlflow.db")
    assert run.info.status == "FINISHED"
    assert_store_matches_local(tmp_path / "outputs" / "mlflow.db", tmp_path / "run")


def test_store_down_before_the_run_was_created_sync_creates_it(tiny_config, tmp_path, monkeypatch):
    from ptexp.tracking import RunTracker

    outage = Outage(monkeypatch)
    real_start = RunTracker.start

    def start(self, *args, **kwargs):  # connected fine, then the store went away before the run was created
        outage.down = True
        real_start(self, *args, **kwargs)

    monkeypatch.setattr(RunTracker, "start", start)
    run_experiment(tiny_config(), tmp_path / "run")
    assert runs_in(tmp_path / "outputs" / "mlflow.db") == []
    outage.down = False
    run_id, sent = sync_run_dir(tmp_path / "run")
    assert sent["created"] == 1 and sent["params"] > 10
    (run,) = runs_in(tmp_path / "outputs" / "mlflow.db")
    assert run.info.run_id == run_id and run.info.status == "FINISHED" and run.data.params["model.name"] == "tiny"
    assert_store_matches_local(tmp_path / "outputs" / "mlflow.db", tmp_path / "run")


@pytest.mark.slow  # each locked call waits out MLflow's 20 s SQLite busy timeout
def test_a_locked_sqlite_store_mid_run_costs_no_metric(tiny_config, tmp_path, monkeypatch, capsys):
    from ptexp.tracking import RunTracker

    store, lock = tmp_path / "outputs" / "mlflow.db", None
    real = RunTracker.log_metrics

    def log_metrics(self, metrics, step):  # another writer takes the database at step 2 and keeps it
        nonlocal lock
        if step == 2 and "train/loss" in metrics and lock is None:
            lock = sqlite3.connect(store, timeout=60, isolation_level=None)
            lock.execute("BEGIN EXCLUSIVE")
        real(self, metrics, step)

    monkeypatch.setattr(RunTracker, "log_metrics", log_metrics)
    result = run_experiment(tiny_config("trainer.batch_size=8", "trainer.log_every=1"), tmp_path / "run")
    assert result["train/steps"] == 8
    assert "database is locked" in capsys.readouterr().err
    lock.execute("ROLLBACK")
    lock.close()
    _, sent = sync_run_dir(tmp_path / "run")
    assert sent["metrics"] > 0
    (run,) = runs_in(store)
    assert run.info.status == "FINISHED"
    assert_store_matches_local(store, tmp_path / "run")


def test_mlflow_http_retries_are_lowered_so_an_outage_does_not_stall_training():
    from mlflow.environment_variables import (
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES,
        MLFLOW_HTTP_REQUEST_TIMEOUT,
    )

    assert MLFLOW_HTTP_REQUEST_MAX_RETRIES.get() <= 2
    assert MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get() <= 1
    assert MLFLOW_HTTP_REQUEST_TIMEOUT.get() <= 10
    from mlflow.tracking import MlflowClient

    started = time.monotonic()
    with pytest.raises(Exception):  # noqa: B017  (whatever MLflow raises: it must raise fast)
        MlflowClient(f"http://127.0.0.1:{free_port()}").get_experiment_by_name("x")
    assert time.monotonic() - started < 8


# ---------------------------------------------------------------------------------------------------------------
# Slow: a real MLflow server stopped and restarted; a parallel sweep on a brand-new SQLite store


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """``mlflow server`` on loopback with a SQLite store in ``folder``; stop() and start() again at will."""

    def __init__(self, folder: Path):
        self.folder, self.port, self.proc = folder, free_port(), None
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = (self.folder / "server.log").open("a")
        self.proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "mlflow"),
                "server",
                "--backend-store-uri",
                f"sqlite:///{self.folder / 'mlflow.db'}",
                "--artifacts-destination",
                str(self.folder / "mlartifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--allowed-hosts",
                f"127.0.0.1:{self.port},localhost:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends the server and its workers
            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"},
        )
        wait_for(self.healthy, 180, "the MLflow server")

    def healthy(self) -> bool:
        import urllib.request

        try:
            urllib.request.urlopen(f"{self.uri}/health", timeout=2).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        wait_for(lambda: not self.healthy(), 30, "the server to stop")


@pytest.mark.slow
def test_a_real_mlflow_server_stopped_mid_run_then_restarted_and_synced(tmp_path):
    server = MlflowServer(tmp_path)
    server.start()
    try:
        run_dir = tmp_path / "run"
        args = [*LONG, f"tracking.uri={server.uri}", f"hydra.run.dir={run_dir}"]
        proc = slowed_cli(*args, f"output_root={tmp_path / 'out'}", delay=0.3)
        wait_for(lambda: len(losses_so_far(run_dir)) >= 3, 180, "three logged steps", proc)
        server.stop()
        stopped_at = len(losses_so_far(run_dir))
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]  # training went on to the end
        assert err.count("warning: MLflow store unreachable") == 1
        assert "still unreachable" in err and f"python -m ptexp.sync {run_dir}" in err
        assert len(losses_so_far(run_dir)) == 40 > stopped_at

        server.start()
        sync = run_cli(str(run_dir), module="ptexp.sync", timeout=120)
        assert sync.returncode == 0, sync.stderr
        from mlflow.tracking import MlflowClient

        client = MlflowClient(server.uri)
        run_id = json.loads((run_dir / "tracking.json").read_text())["run_id"]
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == list(range(1, 41))
        assert {"adapter", "metrics.jsonl", "config.yaml"} <= {a.path for a in client.list_artifacts(run_id)}
        again = run_cli(str(run_dir), module="ptexp.sync", timeout=120)
        assert again.returncode == 0 and "sent 0 metric points, 0 params" in again.stdout, again.stdout
        assert len(client.get_metric_history(run_id, "train/loss")) == 40
    finally:
        server.stop()


def losses_so_far(run_dir: Path) -> list[str]:
    path = run_dir / "metrics.jsonl"
    return [line for line in path.read_text().splitlines() if "train/loss" in line] if path.exists() else []


@pytest.mark.slow
def test_joblib_sweep_of_8_jobs_at_4_workers_on_a_brand_new_sqlite_store(tmp_path):
    proc = run_cli(
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=4",
        *TINY,
        "method=full,prefix",
        "seed=1,2,3,4",
        f"output_root={tmp_path}",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "warning" not in proc.stderr.lower()
    assert "is launching 8 jobs" in proc.stdout + proc.stderr
    runs = runs_in(tmp_path / "mlflow.db")
    (parent,) = [r for r in runs if r.data.tags.get("ptexp.sweep") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 9 and len(children) == 8
    assert parent.info.status == "FINISHED" and all(r.info.status == "FINISHED" for r in children)
    assert {r.data.params["trainer.threads"] for r in children} == {str(max(1, (os.cpu_count() or 1) // 4))}
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_artifacts_go_to_the_servers_store_with_a_tracking_server_and_beside_the_sqlite_store_without(tiny_config):
    from ptexp.store import artifact_root

    local = tiny_config()
    assert artifact_root(local) == (Path(local.output_root) / "mlartifacts").resolve().as_uri()
    assert artifact_root(tiny_config("tracking.uri=http://127.0.0.1:5001")) is None  # the server's mlflow-artifacts:/
    chosen = tiny_config("tracking.uri=http://127.0.0.1:5001", "tracking.artifact_root=s3://bucket/ptexp")
    assert artifact_root(chosen) == "s3://bucket/ptexp"

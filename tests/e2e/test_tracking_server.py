"""End-to-end check of the shared tracking server (``make e2e``; deselected by default by the ``e2e`` marker).

``scripts/tracking_server.sh start`` on free ports with all its state in a temporary folder (a PostgreSQL cluster
initialised there, ``mlflow server`` on top of it), then a real parallel sweep logged to it: 4 jobs (seeds 1-4, tiny
model) on the joblib launcher with 2 workers. The parent run and the 4 children must arrive FINISHED with their
metrics, read back both through the server (MLflow's client) and straight from PostgreSQL's tables; ``stop`` must stop
both servers, and a second ``start`` must reuse the cluster and still serve every run. Needs no browser:
``.venv/bin/python -m pytest -m e2e tests/e2e/test_tracking_server.py``.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY, run_cli
from tests.e2e.test_browser import QUIET_ENV, free_port, tail

pytestmark = pytest.mark.e2e

SCRIPT = ROOT / "scripts" / "tracking_server.sh"
SEEDS = ("1", "2", "3", "4")
METRICS = ("eval/accuracy", "params/trainable")


@dataclass
class TrackingServer:
    uri: str
    pg_port: int
    state: Path  # PTEXP_SERVER_DIR: logs, pid file, credentials, the cluster
    env: dict[str, str]
    started: subprocess.CompletedProcess | None = None  # what `start` printed

    def script(self, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(SCRIPT), *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def sql(self, query: str) -> list[list[str]]:
        """Rows of ``query`` on the database ``mlflow``, through the script's ``psql`` (role ``mlflow``, over TCP)."""
        proc = self.script("psql", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", query, timeout=60)
        assert proc.returncode == 0, f"psql: {proc.stderr}"
        return [line.split("\t") for line in proc.stdout.splitlines() if line]

    def logs(self, proc: subprocess.CompletedProcess | None = None) -> str:
        out = f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}\n" if proc is not None else ""
        return (
            f"{out}mlflow.log:\n{tail(self.state / 'mlflow.log')}\npostgres.log:\n{tail(self.state / 'postgres.log')}"
        )


def answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=5).close()
        return True
    except (urllib.error.URLError, OSError):
        return False


def listens(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def server(request):
    """``tracking_server.sh start`` on free ports, state in a fresh folder; ``stop`` at the end, whatever happened."""
    try:
        import psycopg2  # noqa: F401  (mlflow server's PostgreSQL driver)
    except ImportError:
        pytest.fail('psycopg2 is missing: run `make e2e`, or pip install -e ".[server]"', pytrace=False)
    # Not pytest's tmp_path: it lies in a folder private to this user (mode 700), and run as root the script hands the
    # cluster to the user postgres, who must reach it.
    base = Path(tempfile.mkdtemp(prefix="ptexp-tracking-"))
    base.chmod(0o755)
    ports: set[int] = set()
    while len(ports) < 2:
        ports.add(free_port())
    pg_port, mlflow_port = sorted(ports)
    state = base / "server"
    env = {
        **os.environ,
        **QUIET_ENV,
        "PTEXP_SERVER_DIR": str(state),
        "PTEXP_PG_PORT": str(pg_port),
        "PTEXP_MLFLOW_PORT": str(mlflow_port),
        "PTEXP_PYTHON": sys.executable,
    }
    srv = TrackingServer(uri=f"http://127.0.0.1:{mlflow_port}", pg_port=pg_port, state=state, env=env)

    def stop() -> None:
        stopped = srv.script("stop", timeout=180)
        assert stopped.returncode == 0, f"tracking_server.sh stop failed; state kept in {base}\n{srv.logs(stopped)}"
        shutil.rmtree(base, ignore_errors=True)

    request.addfinalizer(stop)
    started = srv.script("start")
    assert started.returncode == 0, f"tracking_server.sh start failed:\n{srv.logs(started)}"
    srv.started = started
    return srv


@dataclass
class Sweep:
    experiment_id: str
    parent_id: str
    children: dict[str, dict[str, float]]  # run id -> METRICS
    output_root: Path


@pytest.fixture(scope="module")
def sweep(server, tmp_path_factory):
    """A real 4-job sweep on the joblib launcher (2 at a time), tiny model, logged to the server."""
    output_root = tmp_path_factory.mktemp("sweep") / "outputs"
    proc = run_cli(
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"seed={','.join(SEEDS)}",
        *TINY,
        f"tracking.uri={server.uri}",
        f"output_root={output_root}",
        env=QUIET_ENV,
    )
    assert proc.returncode == 0, f"the sweep failed:\n{server.logs(proc)}"
    printed = re.search(r"sweep parent run ([0-9a-f]{32}) in (\S+)", proc.stdout)
    assert printed and printed.group(2) == server.uri, proc.stdout[-2000:]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=server.uri)
    experiment = client.get_experiment_by_name("ptexp")
    assert experiment is not None, "the sweep logged no experiment 'ptexp' to the server"
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("ptexp.sweep") == "parent"]
    assert [p.info.run_id for p in parents] == [printed.group(1)], [(r.info.run_name, r.data.tags) for r in runs]
    parent = parents[0]
    assert parent.info.status == "FINISHED", parent.info
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 1 + len(SEEDS) and len(children) == len(SEEDS), [(r.info.run_name, r.info.status) for r in runs]
    assert sorted(r.data.params["seed"] for r in children) == list(SEEDS)
    for run in children:
        assert run.info.status == "FINISHED", (run.info.run_name, run.info.status, run.data.tags.get("ptexp.error"))
        assert set(METRICS) <= set(run.data.metrics), (run.info.run_name, sorted(run.data.metrics))
        assert 0.0 <= run.data.metrics["eval/accuracy"] <= 1.0
        assert run.data.metrics["params/trainable"] > 0
        assert "adapter" in {a.path for a in client.list_artifacts(run.info.run_id)}, run.info.run_name
        # artifacts travel through the server into its own store, not into the client's output_root
        assert list((server.state / "mlartifacts").rglob(f"{run.info.run_id}/artifacts/adapter/adapter.json"))
    assert not (output_root / "mlartifacts").exists()
    return Sweep(
        experiment_id=experiment.experiment_id,
        parent_id=parent.info.run_id,
        children={r.info.run_id: {k: r.data.metrics[k] for k in METRICS} for r in children},
        output_root=output_root,
    )


def test_start_serves_on_loopback_and_prints_the_uri_and_the_command(server):
    out = server.started.stdout
    assert f"Tracking URI: {server.uri}" in out and f"python -m ptexp tracking.uri={server.uri}" in out, out
    assert server.script("uri").stdout.strip() == server.uri
    status = server.script("status", timeout=60)
    assert status.returncode == 0, status.stdout + status.stderr
    assert answers(f"{server.uri}/health")
    settings = dict(server.sql("SELECT name, setting FROM pg_settings WHERE name IN ('listen_addresses', 'port')"))
    assert settings == {"listen_addresses": "127.0.0.1", "port": str(server.pg_port)}
    assert server.sql("SELECT current_user, current_database()") == [["mlflow", "mlflow"]]


def test_a_parallel_sweep_reaches_the_server_finished_with_metrics(server, sweep):
    # The sweep fixture checked the runs through the server; each job's own record names the same run and status.
    records = [json.loads(p.read_text()) for p in sweep.output_root.glob("multiruns/*/*/*/tracking.json")]
    assert {r["run_id"] for r in records} == set(sweep.children), records
    assert {(r["uri"], r["status"]) for r in records} == {(server.uri, "FINISHED")}


def test_the_sweep_rows_are_in_postgresql(server, sweep):
    expected = {sweep.parent_id, *sweep.children}
    rows = dict(server.sql(f"SELECT run_uuid, status FROM runs WHERE experiment_id = {int(sweep.experiment_id)}"))
    assert rows == dict.fromkeys(expected, "FINISHED"), rows
    keys = ", ".join(f"'{k}'" for k in METRICS)
    stored = server.sql(f"SELECT run_uuid, key, value FROM latest_metrics WHERE key IN ({keys})")
    in_db = {(run_id, key): float(value) for run_id, key, value in stored if run_id in sweep.children}
    assert len(in_db) == len(SEEDS) * len(METRICS), stored
    for run_id, metrics in sweep.children.items():
        for key, value in metrics.items():
            assert math.isclose(in_db[run_id, key], value, rel_tol=1e-9), (run_id, key, in_db[run_id, key], value)
    seeds = server.sql("SELECT value FROM params WHERE key = 'seed' ORDER BY value")
    assert [s for (s,) in seeds] == list(SEEDS)


def test_stop_stops_both_and_a_restart_serves_the_same_runs(server, sweep):
    stopped = server.script("stop", timeout=180)
    assert stopped.returncode == 0, server.logs(stopped)
    status = server.script("status", timeout=60)
    assert status.returncode == 3, status.stdout + status.stderr
    assert not answers(f"{server.uri}/health") and not listens(server.pg_port)

    started = server.script("start")
    assert started.returncode == 0, server.logs(started)
    assert "initialising" not in started.stdout and "creating database" not in started.stdout, started.stdout

    from mlflow.tracking import MlflowClient

    runs = MlflowClient(tracking_uri=server.uri).search_runs([sweep.experiment_id])
    assert {r.info.run_id: r.info.status for r in runs} == dict.fromkeys({sweep.parent_id, *sweep.children}, "FINISHED")

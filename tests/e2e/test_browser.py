"""End-to-end checks in a real headless browser (``make e2e``; deselected by default by the ``e2e`` marker).

A real ``mlflow server`` on loopback (SQLite store, local artifacts), a real two-job sweep (full and prefix, tiny
model) logged to it, then Debian's Chromium, driven by Playwright, opens the MLflow UI's runs page of the sweep and
the report that ``python -m ptexp.report`` writes, and checks what they really show: both child runs with their
``eval/accuracy``, and the report's table rows and loaded plots. Screenshots go to ``outputs/e2e/``.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY, run_cli

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; `make e2e` installs it when missing
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # a container's small /dev/shm would crash renderers
]
SHOTS = ROOT / "outputs" / "e2e"
ACCURACY = "eval/accuracy"
# one prefix length only; a full group, so the task view's gap plot too
REPORT_PLOTS = {"accuracy_vs_step", "loss_vs_step", "accuracy_vs_trainable_fraction", "gap_to_full_by_task"}
QUIET_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "PYTHONWARNINGS": "ignore"}
UI_TIMEOUT_MS = 90_000  # the single-page app renders slowly on a busy 2-core machine


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def screenshot_on_failure(page, name: str):
    """On a failed check, a picture of what the browser showed: outputs/e2e/NAME_failed.png."""
    try:
        yield
    except BaseException:
        with suppress(Exception):
            page.screenshot(path=SHOTS / f"{name}_failed.png", full_page=True)
        raise


def tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


# ---------------------------------------------------------------------------------------------------------------
# Fixtures: the browser first (fail fast when Chromium is missing), then the server and the sweep


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A Playwright persistent context on Debian's Chromium with a fresh user-data-dir; closed at the end."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: run `make e2e`, which installs Debian's chromium package "
            "(apt-get install chromium) before running these tests",
            pytrace=False,
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "the Python package playwright is missing: run `make e2e`, which installs the e2e extra "
            '(pip install -e ".[dev,e2e]"); `playwright install` is not needed',
            pytrace=False,
        )
    playwright = sync_playwright().start()
    try:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1600, "height": 900},
        )
    except Exception:
        playwright.stop()
        raise
    context.set_default_timeout(UI_TIMEOUT_MS)
    SHOTS.mkdir(parents=True, exist_ok=True)
    for stale in SHOTS.glob("*.png"):  # no picture from an earlier run survives to mislead
        stale.unlink()
    yield context
    context.close()
    playwright.stop()


@dataclass
class Server:
    url: str
    root: Path
    log: Path


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory, request):
    """``mlflow server`` on 127.0.0.1:<free port>, SQLite store and served local artifacts; stopped at the end."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    log = root / "mlflow-server.log"
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "mlartifacts"),
        "--serve-artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--allowed-hosts",
        f"127.0.0.1:{port},localhost:{port}",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command,
            cwd=root,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **QUIET_ENV},
            start_new_session=True,  # its own process group: the finalizer stops its workers with it
        )

    def stop() -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    request.addfinalizer(stop)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited with status {proc.returncode}:\n{tail(log)}", pytrace=False)
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                if response.status == 200:
                    break
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"mlflow server did not answer {url}/health within 180 s:\n{tail(log)}", pytrace=False)
        time.sleep(1)
    return Server(url=url, root=root, log=log)


@dataclass
class Sweep:
    experiment_id: str
    parent_id: str
    children: dict[str, tuple[str, float]]  # run id -> (run name, final eval/accuracy)
    output_root: Path


@pytest.fixture(scope="module")
def sweep(mlflow_server):
    """A real two-job sweep (full and prefix on the tiny model) logged to the server."""
    output_root = mlflow_server.root / "ptexp_outputs"
    proc = run_cli(
        "-m",
        "method=full,prefix",
        *TINY,
        f"tracking.uri={mlflow_server.url}",
        f"output_root={output_root}",
        env=QUIET_ENV,
    )
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}\nserver:\n{tail(mlflow_server.log)}"

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.url)
    experiment = client.get_experiment_by_name("ptexp")
    assert experiment is not None, "the sweep logged no experiment 'ptexp' to the server"
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("ptexp.sweep") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children), [
        (r.info.run_name, r.info.status) for r in runs
    ]
    names = sorted(r.info.run_name for r in children)
    assert names[0].startswith("full-") and names[1].startswith("prefix-"), names
    return Sweep(
        experiment_id=experiment.experiment_id,
        parent_id=parent.info.run_id,
        children={r.info.run_id: (r.info.run_name, r.data.metrics[ACCURACY]) for r in children},
        output_root=output_root,
    )


# ---------------------------------------------------------------------------------------------------------------
# The tests


def test_mlflow_ui_lists_both_child_runs_with_their_accuracy(browser, sweep, mlflow_server):
    # The experiment's runs page, filtered to the sweep's children and sorted by accuracy (the UI only reads the
    # filter from the URL together with a sort key; a filter or a sort other than by date also stops it from folding
    # the children under their collapsed parent row). Its routes live after the '#'.
    query = urllib.parse.urlencode(
        {
            "searchFilter": f"tags.`mlflow.parentRunId` = '{sweep.parent_id}'",
            "orderByKey": f"metrics.`{ACCURACY}`",
            "orderByAsc": "false",
        },
        quote_via=urllib.parse.quote,
    )
    url = f"{mlflow_server.url}/#/experiments/{sweep.experiment_id}/runs?{query}"
    page = browser.new_page()
    with screenshot_on_failure(page, "mlflow_experiment"):
        page.goto(url)
        # AG Grid rows carry the run id in row-id (one row element per column container: pinned and scrolled).
        for run_id, (name, _) in sweep.children.items():
            page.locator(f'[role="row"][row-id="{run_id}"]').filter(has_text=name).first.wait_for()
        shown = {r.get_attribute("row-id") for r in page.locator("[role=row][row-id]").all()}
        assert shown == set(sweep.children), (
            f"the UI lists runs {shown}; the sweep's children are {set(sweep.children)}"
        )
        names = [page.locator(f'[row-id="{i}"] [col-id="attributes.`Run Name`"]').first.inner_text() for i in shown]
        assert any("full-" in n for n in names) and any("prefix-" in n for n in names), names

        # MLflow 3's assistant side panel takes a third of the width: close it when it is there.
        close = page.get_by_role("button", name="Close", exact=True)
        if close.count() == 1 and close.is_visible():
            close.click()
        # Metric columns are opt-in: tick eval/accuracy in the column selector, as a user would.
        page.get_by_role("button", name="Columns", exact=True).click()
        page.get_by_placeholder("Search columns").fill(ACCURACY)
        page.get_by_text(ACCURACY, exact=True).first.click()
        page.keyboard.press("Escape")
        page.get_by_role("columnheader", name=ACCURACY).first.wait_for()

        for run_id, (name, accuracy) in sweep.children.items():
            cell = page.locator(f'[role="row"][row-id="{run_id}"] [col-id="metrics.`{ACCURACY}`"]').first
            cell.wait_for()
            text = cell.inner_text().strip()
            try:
                value = float(text)
            except ValueError:
                pytest.fail(f"{ACCURACY} of {name} shows {text!r} in the UI, expected {accuracy}")
            assert math.isclose(value, accuracy, abs_tol=5e-4), (name, text, accuracy)
            cell.scroll_into_view_if_needed()
            box = cell.bounding_box()  # in the picture, not scrolled out of the grid's view
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= page.viewport_size["width"], box
        page.wait_for_timeout(500)  # let the grid settle before the picture
        page.screenshot(path=SHOTS / "mlflow_experiment.png")
    page.close()


def test_report_html_shows_both_groups_and_every_plot(browser, sweep, mlflow_server):
    out = mlflow_server.root / "report"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ptexp.report",
            "--tracking-uri",
            mlflow_server.url,
            "--latest-sweep",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **QUIET_ENV},
    )
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert sweep.parent_id in proc.stdout  # the latest sweep is ours

    page = browser.new_page()
    with screenshot_on_failure(page, "report"):
        page.goto((out / "report.html").as_uri())
        page.wait_for_load_state("load")
        headers = [h.strip() for h in page.locator("#summary thead th").all_inner_texts()]
        rows = page.locator("#summary tbody tr")
        assert rows.count() == 2, f"the report's summary table has {rows.count()} rows, expected 2 (full, prefix)"
        by_method = {}
        for i in range(rows.count()):
            cells = [c.strip() for c in rows.nth(i).locator("td").all_inner_texts()]
            by_method[cells[headers.index("method")]] = cells
        assert set(by_method) == {"full", "prefix"}, by_method
        accuracy = {name.split("-", 1)[0]: value for name, value in sweep.children.values()}
        for method, cells in by_method.items():
            assert cells[headers.index("metric")] == "accuracy"  # the embedded data's primary metric
            shown = cells[headers.index("final eval")]
            assert shown.startswith(f"{accuracy[method]:.4f}"), (method, shown, accuracy[method])
        assert page.locator("#summary").is_visible()

        page.wait_for_function("Array.from(document.images).every(img => img.complete)")
        images = page.evaluate(
            """Array.from(document.images).map(img => ({
                alt: img.alt, width: img.naturalWidth, height: img.naturalHeight,
                shown: img.getBoundingClientRect().width}))"""
        )
        assert {img["alt"] for img in images} == REPORT_PLOTS, images
        broken = [img for img in images if img["width"] <= 0 or img["height"] <= 0 or img["shown"] <= 0]
        assert not broken, f"broken or hidden images in the report: {broken}"
        page.screenshot(path=SHOTS / "report.png", full_page=True)
    page.close()

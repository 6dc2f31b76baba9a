"""Running a stage's jobs as ``python -m ptexp -m`` sweeps, through Hydra's launcher (``hydra/launcher=joblib``
runs each sweep's jobs in parallel): the jobs are cut into as few sweeps as make each one a product of values."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ptexp.study.spec import Job, job_overrides
from ptexp.sweep import STAGE_RUN_ENV

Busy = Callable[[], bool]
CLOSE_S = 600  # after an interrupt: how long a job may take to close its run (checkpoint, KILLED) before it is killed


class StageFailed(RuntimeError):
    """A sweep of the stage exited with an error (a job failed); its own output says which."""


def blocks(jobs: list[Job]) -> list[list[Job]]:
    """The jobs cut into groups whose assignments form a product (one Hydra sweep each), in the jobs' order."""
    if not jobs:
        return []
    assignments = [job.assignment() for job in jobs]
    keysets = list(dict.fromkeys(tuple(a) for a in assignments))
    if len(keysets) > 1:
        return [b for keys in keysets for b in blocks([j for j, a in zip(jobs, assignments, strict=True)
                                                        if tuple(a) == keys])]  # fmt: skip
    values = {key: list(dict.fromkeys(a[key] for a in assignments)) for key in keysets[0]}
    if math.prod(len(v) for v in values.values()) == len(jobs):  # the jobs are distinct
        return [jobs]
    key = next((k for k, v in values.items() if len(v) > 1), None)
    if key is None:  # the same job more than once
        return [jobs[:1]]
    return [b for value in values[key] for b in blocks([j for j in jobs if j.assignment()[key] == value])]


def sweep_overrides(block: list[Job]) -> list[str]:
    """``key=v1,v2`` per assigned key of a product block (a value with commas, e.g. a list, stays whole)."""
    assignments = [job.assignment() for job in block]
    return [f"{key}={','.join(dict.fromkeys(a[key] for a in assignments))}" for key in assignments[0]]


def run_block(
    block: list[Job], *, base: list[str], key: str, stage_run: str | None, sweep_dir: Path, busy: Busy
) -> None:
    """One ``python -m ptexp -m`` sweep of the block, its runs under ``stage_run``. SIGINT/SIGTERM here (an
    Interrupted from ptexp.signals) reach the sweep too; it is waited for, so that its runs are closed."""
    cmd = [sys.executable, "-m", "ptexp", "-m", *base, *job_overrides(block[0], key), *sweep_overrides(block),
           f"hydra.sweep.dir={sweep_dir}"]  # fmt: skip
    env = {**os.environ, **({STAGE_RUN_ENV: stage_run} if stage_run else {})}
    print(f"[ptexp.study] $ python -m ptexp -m {' '.join(sweep_overrides(block))} ({len(block)} runs)", flush=True)
    code = run_forwarding(cmd, env, busy)
    if code != 0:
        raise StageFailed(f"a sweep of the study exited with status {code}: {' '.join(sweep_overrides(block))}")


def run_forwarding(cmd: list[str], env: dict[str, str], busy: Busy = lambda: False) -> int:
    """Run ``cmd`` as a process group of its own and wait; SIGINT/SIGTERM here (a KeyboardInterrupt, e.g. ptexp's
    Interrupted) go to the whole group, so that a launcher's worker processes (joblib's) stop their jobs with the
    sweep instead of training on as orphans. Then wait for the sweep, and while ``busy()`` (a job still closing its
    run: checkpoint, KILLED) for the group, at most ``CLOSE_S``; what is left of the group (idle pool workers) is
    killed; re-raise."""
    process = subprocess.Popen(cmd, env=env, process_group=0)
    try:
        return process.wait()
    except KeyboardInterrupt as err:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, getattr(err, "signum", signal.SIGINT))
        process.wait()
        deadline = time.monotonic() + CLOSE_S
        while group_alive(process.pid) and busy() and time.monotonic() < deadline:
            time.sleep(0.5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        raise


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def run_jobs(
    jobs: list[Job], *, base: list[str], key: str, stage_run: str | None, root: Path, stage: str, busy: Busy
) -> None:
    """Every job, a sweep per product block, each in its own folder under ``root``; ``busy()``: whether a job's run
    is still RUNNING (after an interrupt, the study waits for its jobs to close their runs)."""
    for i, block in enumerate(blocks(jobs)):
        sweep_dir = root / "studies" / key / f"{stage}-{time.strftime('%Y%m%d-%H%M%S')}-{i}"
        run_block(block, base=base, key=key, stage_run=stage_run, sweep_dir=sweep_dir.resolve(), busy=busy)

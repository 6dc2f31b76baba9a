"""Stopping cleanly on SIGINT / SIGTERM: the training loop finishes its step, checkpoints, then stops."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the run (after a checkpoint, when it came during training)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """Turns SIGINT and SIGTERM into :class:`Interrupted`. While ``deferring`` (inside a training step) the
    signal is only noted, so that the loop can finish the step, write a checkpoint and stop; a second signal
    stops at once. Installs nothing outside the main thread (signal handlers can live only there)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.deferring = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        if self.deferring and self.signum is None:
            self.signum = signum
            return
        raise Interrupted(signum)

    @contextmanager
    def deferred(self):
        self.deferring = True
        try:
            yield self
        finally:
            self.deferring = False

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def check(self) -> None:
        if self.signum is not None:
            raise Interrupted(self.signum)

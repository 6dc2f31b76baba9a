"""The two exceptions the CLIs turn into short messages, and :func:`need`, the one-line config check; every other
module may import this one."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's config, data or command line: reported as one short message, exit status 2."""


class TrainingDiverged(RuntimeError):
    """The loss stopped being a finite number: the run is marked FAILED, exit status 1."""


def need(ok: bool, key: str, problem: str, valid: str) -> None:
    """Raise ``UserError("KEY: problem; valid: ...")`` unless ``ok``: the one line of every config check."""
    if not ok:
        raise UserError(f"{key}: {problem}; valid: {valid}")

"""The two exceptions the CLIs turn into short messages; every other module may import this one."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's config, data or command line: reported as one short message, exit status 2."""


class TrainingDiverged(RuntimeError):
    """The loss stopped being a finite number: the run is marked FAILED, exit status 1."""

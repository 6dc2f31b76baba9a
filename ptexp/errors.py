"""The two exceptions the CLIs turn into short messages, their argument parser, and :func:`need`, the one-line config
check; every other module may import this one."""

from __future__ import annotations

import argparse
import difflib
import sys
from typing import NoReturn


class UserError(Exception):
    """A mistake in the user's config, data or command line: reported as one short message, exit status 2."""


class TrainingDiverged(RuntimeError):
    """The loss stopped being a finite number: the run is marked FAILED, exit status 1."""


class OneLineParser(argparse.ArgumentParser):
    """argparse's parser, with a usage mistake told in one line ``error: ...; valid: ...`` (exit status 2) instead of
    the usage block; an unknown option gets the closest known one."""

    def error(self, message: str) -> NoReturn:
        options = [o for action in self._actions for o in action.option_strings if o.startswith("--")]
        unknown = message.removeprefix("unrecognized arguments: ")
        if unknown == message:
            message = f"{message}; valid: see {self.prog} --help"
        elif unknown.startswith("-"):
            flag = unknown.split()[0].split("=")[0]
            close = difflib.get_close_matches(flag, options, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]}?)" if close else ""
            message = f"{flag}: no such option{hint}; valid: {', '.join(options)}"
        else:
            message = f"{unknown.split()[0]}: unexpected argument; valid: see {self.prog} --help"
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def need(ok: bool, key: str, problem: str, valid: str) -> None:
    """Raise ``UserError("KEY: problem; valid: ...")`` unless ``ok``: the one line of every config check."""
    if not ok:
        raise UserError(f"{key}: {problem}; valid: {valid}")

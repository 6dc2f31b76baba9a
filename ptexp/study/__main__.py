"""Command line: ``python -m ptexp.study [--plan] [group=option ...] [key=value ...] [key=a,b ...]``.

The same overrides as ``python -m ptexp``; comma-separated values add cell axes over the experiment's sweep axes;
``study.*`` keys set the grid, the budget and the seeds (README, "Studies"). ``--plan`` prints the jobs and an
estimated time and exits. Mistakes: one ``error:`` line, exit status 2, nothing written.

    python -m ptexp.study experiment=glue_compare --plan
    python -m ptexp.study experiment=scale_study_tuned data.root=/path/to/glue_data
    python -m ptexp.study model=tiny method=full,prefix data.selection_rows=24 'study.grid={optimizer.lr:[1e-3,1e-2]}'
"""

from __future__ import annotations

import signal
import sys

from ptexp.__main__ import check_group_choices, check_value_types
from ptexp.errors import UserError
from ptexp.store import short


def build(args: list[str]):
    """The study of these overrides, checked; UserError for a mistake."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from ptexp.study.checks import check_study
    from ptexp.study.run import Study
    from ptexp.study.spec import (
        compose_cells,
        compose_config,
        narrow_axes,
        set_grids,
        split_arguments,
        study_key,
        sweep_axes,
    )

    try:
        plain, given, grids = split_arguments(args)
        cfg = compose_config(plain, hydra=True)
        plain, narrowed = narrow_axes(plain, cfg)
        if narrowed:  # the study's base config (and key) without them
            given, cfg = {**narrowed, **given}, compose_config(plain, hydra=True)
        set_grids(cfg, grids)
        cells = compose_cells(plain, sweep_axes(cfg, given), grids)
    except (HydraException, OmegaConfBaseException) as err:
        raise UserError(f"overrides: {short(err)}; valid: python -m ptexp's groups and keys") from None
    if not cfg.tracking.enabled:
        raise UserError("tracking.enabled: a study finds its runs in MLflow; valid: true")
    check_study(cells, cfg.study)
    key = study_key(cfg)
    return Study(cfg=cfg, cells=cells, base=plain, key=key, command=" ".join(["python -m ptexp.study", *args]))


def main(argv: list[str]) -> int:
    if {"-h", "--help"} & set(argv):
        print(__doc__.strip())
        return 0
    plan = "--plan" in argv
    args = [arg for arg in argv if arg != "--plan"]
    check_group_choices(args)
    check_value_types(args)
    from ptexp.study.launch import StageFailed

    try:
        study = build(args)
        if plan:
            from ptexp.study.plan import print_plan

            print_plan(study)
            return 0
        from ptexp.study.run import run_study

        run_study(study)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except StageFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        signum = getattr(err, "signum", signal.SIGINT)
        print(f"interrupted by {signal.Signals(signum).name}: the study's runs are marked KILLED; run the same "
              "command again to finish it", file=sys.stderr)  # fmt: skip
        return 128 + signum
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

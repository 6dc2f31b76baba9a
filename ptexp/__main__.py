"""Command line: ``python -m ptexp [group=option ...] [key=value ...]`` (Hydra; ``-m`` for sweeps).

Torch, transformers and MLflow are imported only after the cheap checks (group options, value types, unknown
keys, trainer and tracking settings, the tracking server, ``trainer.resume``), so that those mistakes fail in
about a second.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import sys
import types
import typing
import warnings
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from ptexp import config as _config
from ptexp.checkpoint import resume_target
from ptexp.checks import folder_problem, validate_trainer_and_tracking
from ptexp.config import CONF_DIR
from ptexp.errors import TrainingDiverged, UserError
from ptexp.methods import SECTIONS, Schema  # importing the registry registers the schema (no torch yet)
from ptexp.store import holds_only_hydra_files, probe_server, remove_folder, tracking_uri
from ptexp.sweep import SCHEMA_MATCHING_WARNING

warnings.filterwarnings("ignore", message=SCHEMA_MATCHING_WARNING)


def check_group_choices(argv: list[str]) -> None:
    """Exit with one short line for ``group=option`` arguments that name no option (before Hydra's longer one)."""
    groups = {d.name: sorted(f.stem for f in d.glob("*.yaml")) for d in CONF_DIR.iterdir() if d.is_dir()}
    groups["hydra/launcher"] = ["basic", *sorted(f.stem for f in (CONF_DIR / "hydra" / "launcher").glob("*.yaml"))]
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        if not sep or key not in groups or key == "hydra" or "(" in value or value in ("null", ""):
            continue
        for option in value.split(","):
            if option not in groups[key]:
                print(f"error: {key}={option}: no such option; valid: {', '.join(groups[key])}", file=sys.stderr)
                sys.exit(2)


def check_value_types(argv: list[str]) -> None:
    """Exit with one short line for ``key=value`` arguments whose value the schema's type refuses (before Hydra's
    longer message): each key is tried on the schema with every section, every method's options included, filled
    in with its defaults."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf
    from omegaconf.errors import ValidationError

    c = _config
    options = {section: dataclass() for section, dataclass in SECTIONS.items()}
    parts = {"model": c.ModelConfig(), "method": c.MethodConfig(), "data": c.DataConfig()}
    schema = OmegaConf.structured(Schema(**parts, optimizer=c.OptimizerConfig(), **options))
    groups = {d.name for d in CONF_DIR.iterdir() if d.is_dir()}
    parser = OverridesParser.create()
    for arg in argv:
        key = arg.split("=", 1)[0].lstrip("+~")
        if arg.startswith("-") or "=" not in arg or key in groups or key.startswith("hydra"):
            continue
        try:
            override = parser.parse_override(arg)
            values = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
        except Exception:
            continue  # not ours to judge: Hydra reports it
        key = override.key_or_group
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(schema, parent) if parent else schema
        typed = OmegaConf.is_dict(node) and OmegaConf.get_type(node) is not dict  # not e.g. model.config_overrides
        if typed and not arg.startswith("+") and leaf not in list(node.keys()):
            print(f"error: {key}: no such key; valid: {', '.join(node)}", file=sys.stderr)
            sys.exit(2)
        shape = mapping_shape(key)
        for value in values:
            wrong_shape = shape is not None and not override.is_delete() and not isinstance(value, dict)
            if wrong_shape and value is not None:  # null: the schema says whether the key may be null
                print(f"error: {key}: {value!r} is not valid; valid: {shape}", file=sys.stderr)
                sys.exit(2)
            problem = folder_problem(value) if key == "output_root" and "${" not in str(value) else None
            if problem is not None:
                print(f"error: output_root: {problem}; valid: a folder that can be written", file=sys.stderr)
                sys.exit(2)
            try:
                OmegaConf.update(schema.copy(), key, value, merge=True)
            except ValidationError as err:
                valid = shape if wrong_shape else _expected(str(err))
                print(f"error: {key}: {value!r} is not valid; valid: {valid}", file=sys.stderr)
                sys.exit(2)
            except Exception:
                break  # not ours to judge: Hydra reports it


def mapping_shape(key: str) -> str | None:
    """What ``key`` must be when the schema types it as a mapping (a dict field such as optimizer.task_lr, one entry
    of it such as optimizer.task_lr.glue_rte, or a section): e.g. "a mapping {task: {method: lr}}, e.g. ...";
    None for any other key."""
    hint: Any = _config.Config
    shape = field_key = None
    for depth, part in enumerate(key.split(".")):
        if dataclasses.is_dataclass(hint):
            fields = {f.name: f for f in dataclasses.fields(hint)}
            if part not in fields:
                return None
            declared = typing.get_type_hints(hint)[part]
            union = typing.get_origin(declared) in (typing.Union, types.UnionType)
            hint = next(a for a in typing.get_args(declared) if a is not type(None)) if union else declared  # X | None
            shape, field_key = fields[part].metadata.get("shape"), ".".join(key.split(".")[: depth + 1])
        elif typing.get_origin(hint) is dict:
            hint = typing.get_args(hint)[1]
        else:
            return None
    if not (dataclasses.is_dataclass(hint) or typing.get_origin(hint) is dict):
        return None
    if shape is None:
        keys = ", ".join(f.name for f in dataclasses.fields(hint)) if dataclasses.is_dataclass(hint) else None
        return f"a mapping of {keys}" if keys else "a mapping {key: value}"
    return f"a mapping {shape}" if field_key == key else f"{field_key} is a mapping {shape}"


def _expected(message: str) -> str:
    first = message.strip().splitlines()[0]
    for needle, expected in (
        ("to Integer", "an integer"),
        ("to Float", "a number, e.g. 3e-5"),
        ("valid bool", "true or false"),
    ):
        if needle in first:
            return expected
    match = re.search(r"expected one of \[(.*)\]", first)
    return match.group(1) if match else first


def drop_empty_run_dir(run_dir: Path) -> None:
    """After a mistake, remove the run folder Hydra made if it holds nothing but Hydra's own files."""
    if holds_only_hydra_files(run_dir):
        remove_folder(run_dir, parents=2)  # and the date folder and runs/, if this was their only run


def threads_per_job(cfg: DictConfig) -> None:
    """Parallel launchers: each job's torch threads, unless trainer.threads is set. joblib: an equal share of the
    cores (cores // n_jobs); submitit (hydra/launcher=slurm, submitit_local): ``cpus_per_task``, the cores Slurm
    allocates to each job."""
    launcher = HydraConfig.get().launcher
    n_jobs, cpus_per_task = launcher.get("n_jobs"), launcher.get("cpus_per_task")
    if cfg.trainer.threads is not None:
        return
    if isinstance(cpus_per_task, int) and cpus_per_task > 0:
        threads = cpus_per_task
    elif isinstance(n_jobs, int) and n_jobs != 0:
        cores = os.cpu_count() or 1
        workers = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)  # joblib: -1 = every core, -2 = all but one
        threads = max(1, cores // workers)
    else:
        return
    with open_dict(cfg):
        cfg.trainer.threads = threads


def refuse_sweep_without_m(hydra_cfg: DictConfig) -> None:
    """A config that sweeps (``hydra.sweeper.params``, set by a preset such as experiment=glue_compare) run without
    ``-m`` would run one job of it: a UserError naming the preset instead."""
    params = hydra_cfg.sweeper.get("params")
    if hydra_cfg.mode == RunMode.MULTIRUN or not params:
        return
    presets = [
        f"{group}={option}"
        for group, option in hydra_cfg.runtime.choices.items()
        if option and (path := CONF_DIR / group / f"{option}.yaml").is_file()
        and OmegaConf.select(OmegaConf.load(path), "hydra.sweeper") is not None
    ]  # fmt: skip
    name = presets[0] if presets else "hydra.sweeper.params"
    raise UserError(f"{name}: a sweep (over {', '.join(params)}) needs -m; valid: python -m ptexp -m {name} ...")


def early_checks(cfg: DictConfig, run_dir: Path, in_sweep: bool) -> Path:
    """What can fail without torch, in about a second: the trainer and tracking keys, a tracking server that does
    not answer, and what ``trainer.resume`` names. Returns the run folder to use (the resumed one, if any)."""
    validate_trainer_and_tracking(cfg)
    if cfg.tracking.enabled and tracking_uri(cfg).startswith(("http://", "https://")):
        probe_server(tracking_uri(cfg))
    target = resume_target(cfg, run_dir, in_sweep)
    if target is not None and target != run_dir:  # resuming elsewhere: this invocation's folder stays empty
        drop_empty_run_dir(run_dir)
        return target
    return run_dir


def fail(err: UserError, run_dir: Path) -> NoReturn:
    print(f"error: {err}", file=sys.stderr)
    drop_empty_run_dir(run_dir)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Run one experiment; returns its primary metric (what sweepers optimise): the best on the selection split
    when there is one, else the final value on the eval split."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    if in_sweep:
        threads_per_job(cfg)
    try:
        refuse_sweep_without_m(hydra_cfg)
        run_dir = early_checks(cfg, run_dir, in_sweep)
    except UserError as err:
        fail(err, run_dir)
    except KeyboardInterrupt:
        sys.exit(128 + signal.SIGINT)

    from ptexp.evaluation import LABELS
    from ptexp.metrics import metric_names
    from ptexp.trainer import run_experiment

    try:
        result = run_experiment(cfg, run_dir, list(hydra_cfg.overrides.task), in_sweep=in_sweep)
    except UserError as err:
        fail(err, run_dir)
    except TrainingDiverged as err:
        print(f"error: training diverged: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as err:
        signum = getattr(err, "signum", signal.SIGINT)
        print(f"interrupted by {signal.Signals(signum).name}: the run is marked KILLED", file=sys.stderr)
        sys.exit(128 + signum)
    primary = metric_names(cfg.data)[1]
    # what a sweeper optimises: the primary metric on the selection split when there is one, else on the eval split
    key = f"selection/best_{primary}" if f"selection/best_{primary}" in result else f"eval/{primary}"
    objective = result[key]
    if int(os.environ.get("RANK", "0")) != 0:
        return objective  # under torchrun, rank 0 alone reports (its run folder is the one every rank wrote to)
    if in_sweep:
        split = "the selection split carved from train" if key.startswith("selection/") else "the eval split"
        print(f"[ptexp] objective (what a sweeper optimises): {key} {objective:.4f}, on {split}", flush=True)
    scores = ", ".join(
        f"{LABELS.get(name, name)} {result[f'eval/{name}']:.4f}"
        for name in dict.fromkeys([primary, "accuracy", "macro_f1"])
        if f"eval/{name}" in result
    )
    print(
        f"[ptexp] done: eval {scores}, "
        f"train {result['time/train_s']:.1f}s ({result['throughput/train_samples_per_s']:.1f} samples/s)\n"
        f"[ptexp] outputs: {run_dir}",
        flush=True,
    )
    if cfg.tracking.enabled:
        print(f"[ptexp] MLflow: mlflow ui --backend-store-uri {tracking_uri(cfg)}", flush=True)
    return objective


if __name__ == "__main__":
    check_group_choices(sys.argv[1:])
    check_value_types(sys.argv[1:])
    main()

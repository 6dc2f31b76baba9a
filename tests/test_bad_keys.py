"""A wrong value for every key of the schema (issue 14), checked in-process along the CLI's own path: the early
argument checks of ``ptexp.__main__``, Hydra's composition, the trainer/tracking checks, ``prepare_config`` and
building data, tokenizer and model (where PEFT's target modules and the data keys are checked). Each must give
one ``error: KEY: ...; valid: ...`` line. ``tests/test_bad_input.py`` runs a handful of them (the issue's three
escapes, data keys, select_best) through the real command line, which also checks exit 2 and no run left.

``test_every_schema_key_has_a_bad_value_case`` keeps the table complete: a new key of the schema (in
``ptexp/config.py``, or in a method's options, which the registry adds) needs a case here, one in test_bad_input.py,
or a reason in ``NOT_HERE``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import typing

import pytest
import torch

from ptexp.__main__ import check_group_choices, check_value_types
from ptexp.checks import validate_trainer_and_tracking
from ptexp.devices import pick_device
from ptexp.errors import UserError
from ptexp.experiment import build_experiment, prepare_config, set_up_training
from ptexp.methods import SECTIONS, Schema
from tests.conftest import make_config
from tests.test_bad_input import CASES as CLI_CASES

FILES = ["data=files", "data.train_file={D}/good.csv", "data.eval_file={D}/good.csv"]

# key=value arguments (on model=tiny) -> what the one line must contain, starting with the key it names
CASES: dict[str, tuple[list[str], list[str]]] = {
    # model
    "model.name": (["model.name= "], ["model.name: empty"]),
    "model.name_or_path": (["model.name_or_path=/nonexistent/model"], ["model.name_or_path", "neither"]),
    "model.tokenizer": (["model.tokenizer=/nonexistent/tok"], ["model.tokenizer: '/nonexistent/tok'", "neither"]),
    "model.random_init": (["model.random_init=maybe"], ["model.random_init", "true or false"]),
    "model.config_overrides": (["model.config_overrides.hidden_size=-3"], ["model.name_or_path", "negative"]),
    "model.pooling": (["model.pooling=max"], ["model.pooling", "cls, mean"]),
    "model.classifier_dropout": (["model.classifier_dropout=1.5"], ["model.classifier_dropout: 1.5", "0 <= p < 1"]),
    "model.attn_implementation": (["model.attn_implementation=nope"], ["model.attn_implementation", "eager"]),
    "method.name": (["method.name=nope"], ["method.name", "unknown method 'nope'", "prefix"]),
    # prefix, prompt, LoRA, IA3
    "prefix.projection": (["method=prefix", "prefix.projection=maybe"], ["prefix.projection", "true or false"]),
    "prefix.projection_hidden": (["method=prefix", "prefix.projection_hidden=0"], ["prefix.projection_hidden"]),
    "prefix.dropout": (["method=prefix", "prefix.dropout=1"], ["prefix.dropout", "0 <= p < 1"]),
    "prefix.init": (["method=prefix", "prefix.init=nope"], ["prefix.init", "random, zero, tokens"]),
    "prefix.init (vocab, projected)": (
        ["method=prefix", "prefix.init=vocab", "prefix.projection=true"],
        ["prefix.init: vocab cannot initialise a projected prefix", "random or zero"],
    ),
    "prefix.init_std": (["method=prefix", "prefix.init_std=-1"], ["prefix.init_std: -1.0", "> 0"]),
    "prefix.init_text": (["method=prefix", "prefix.init=tokens", "prefix.init_text= "], ["prefix.init_text"]),
    "prefix.shift_positions": (["method=prefix", "prefix.shift_positions=maybe"], ["prefix.shift_positions"]),
    "prefix.layers": (["method=prefix", "prefix.layers=3"], ["prefix.layers: 3", "1..2"]),
    "prefix_length": (["method=prefix", "prefix_length=-1"], ["prefix_length", ">= 0"]),
    "prompt.init": (["method=prompt", "prompt.init=nope"], ["prompt.init", "random, vocab, text"]),
    "prompt.init_std": (["method=prompt", "prompt.init_std=0"], ["prompt.init_std", "> 0"]),
    "prompt.init_text": (["method=prompt", "prompt.init=text", "prompt.init_text= "], ["prompt.init_text"]),
    "lora.r": (["method=lora", "lora.r=0"], ["lora.r: 0", ">= 1"]),
    "lora.alpha": (["method=lora", "lora.alpha=0"], ["lora.alpha: 0", "> 0"]),
    "lora.dropout": (["method=lora", "lora.dropout=1"], ["lora.dropout", "0 <= p < 1"]),
    "lora.target_modules": (["method=lora", "lora.target_modules=[]"], ["lora.target_modules: empty", "query"]),
    "lora.target_modules (a non-linear module)": (
        ["method=lora", "lora.target_modules=[attention]"],
        ["lora.target_modules", "BertAttention, which PEFT cannot adapt", "query, key, value, dense"],
    ),
    "ia3.target_modules": (["method=ia3", "ia3.target_modules=[nope]"], ["ia3.target_modules", "matches no"]),
    "ia3.feedforward_modules": (["method=ia3", "ia3.feedforward_modules=[query]"], ["ia3.feedforward_modules"]),
    # AdaLoRA (data.max_train_samples=16 at batch 32 for 3 epochs: a run of 3 steps)
    "adalora.init_r": (["method=adalora", "adalora.init_r=0"], ["adalora.init_r: 0", ">= 1"]),
    "adalora.target_r": (["method=adalora", "adalora.target_r=16"], ["adalora.target_r: 16 > adalora.init_r 12"]),
    "adalora.tinit": (["method=adalora", "adalora.tinit=1000"], ["adalora.tinit", "no step to prune", "< 3"]),
    "adalora.tinit (negative)": (["method=adalora", "adalora.tinit=-1"], ["adalora.tinit: -1", ">= 0"]),
    "adalora.tfinal": (["method=adalora", "adalora.tfinal=3"], ["adalora.tfinal", "tinit 0 + tfinal 3", "< 3"]),
    "adalora.deltaT": (["method=adalora", "adalora.deltaT=0"], ["adalora.deltaT: 0", ">= 1"]),
    "adalora.beta1": (["method=adalora", "adalora.beta1=1"], ["adalora.beta1: 1.0", "0 < beta1 < 1"]),
    "adalora.beta2": (["method=adalora", "adalora.beta2=0"], ["adalora.beta2: 0.0", "0 < beta2 < 1"]),
    "adalora.orth_reg_weight": (["method=adalora", "adalora.orth_reg_weight=-1"], ["adalora.orth_reg_weight"]),
    "adalora.target_modules": (["method=adalora", "adalora.target_modules=[nope]"], ["adalora.target_modules"]),
    "adalora.alpha": (["method=adalora", "adalora.alpha=0"], ["adalora.alpha: 0", "> 0"]),
    "adalora.dropout": (["method=adalora", "adalora.dropout=1"], ["adalora.dropout: 1.0", "0 <= p < 1"]),
    # data
    "data.name": (["data.name= "], ["data.name: empty"]),
    "data.source": (["data.source=nope"], ["data.source", "embedded, hub, files"]),
    "data.task": (["data.task=nope"], ["data.task", "classification, regression"]),
    "data.hub_path": (["data=sst2", "data.hub_path="], ["data.hub_path"]),
    "data.data_dir": (["data=sst2", "data.data_dir=/nonexistent/sst2"], ["data.data_dir", "does not exist"]),
    "data.root": (["data=glue_rte", "data.root=/nonexistent/glue"], ["data.root", "/nonexistent/glue does not"]),
    "data.folder": (["data.root=/tmp", "data.folder=null"], ["data.root", "no task folder (data.folder)"]),
    "data.train_file": ([*FILES, "data.train_file={D}/none.csv"], ["data.train_file", "file not found"]),
    "data.eval_file": ([*FILES, "data.eval_file={D}/none.csv"], ["data.eval_file", "file not found"]),
    "data.text_column": (["data.text_column=nope"], ["data.text_column", "'nope'", "columns found"]),
    "data.text_pair_column": (["data.text_pair_column=nope"], ["data.text_pair_column", "'nope'"]),
    "data.label_column": (["data.label_column=nope"], ["data.label_column", "'nope'"]),
    "data.columns": (["data.columns=[a,b]"], ["data.text_column", "columns found: a, b"]),
    "data.file_columns": (["data.file_columns.text_column=nope"], ["data.text_column", "'nope'"]),
    "data.label_names": (["data.label_names=[a,a]"], ["data.label_names", "repeats", "distinct"]),
    "data.label_names (one)": (["data.label_names=[a]"], ["data.label_names", "at least two"]),
    "data.label_range": (["data=glue_stsb", "data.label_range=[5,0]"], ["data.label_range: [5.0, 0.0]", "low < high"]),
    "data.metrics": (["data.metrics=[nope]"], ["data.metrics", "'nope'", "accuracy, f1, macro_f1, mcc"]),
    "data.primary_metric": (["data.primary_metric=pearson"], ["data.primary_metric", "not a classification"]),
    "data.selection_rows": (["data.selection_rows=-1"], ["data.selection_rows: -1", ">= 1"]),
    "data.selection_rows (too many)": (["data.selection_rows=100000"], ["data.selection_rows", "no training rows"]),
    "data.selection_fraction": (["data.selection_fraction=1.5"], ["data.selection_fraction: 1.5", "0 < f < 1"]),
    "data.max_train_samples": (["data.max_train_samples=0"], ["data.max_train_samples", ">= 1"]),
    "data.max_eval_samples": (["data.max_eval_samples=0"], ["data.max_eval_samples", ">= 1"]),
    "data.subset_seed": (["data.subset_seed=x"], ["data.subset_seed", "an integer"]),
    "data.max_length": (["data.max_length=1"], ["data.max_length", ">= 2"]),
    # optimizer
    "optimizer.name": (["optimizer.name=nope"], ["optimizer.name", "adamw, adam, sgd"]),
    "optimizer.lr": (["optimizer.lr=0"], ["optimizer.lr", "positive"]),
    "optimizer.weight_decay": (["optimizer.weight_decay=-1"], ["optimizer.weight_decay", ">= 0"]),
    "optimizer.betas": (["optimizer.betas=[1.5,0.999]"], ["optimizer.betas", "0 <= b < 1"]),
    "optimizer.eps": (["optimizer.eps=-1"], ["optimizer.eps: -1.0", ">= 0"]),
    "optimizer.momentum": (["optimizer=sgd", "optimizer.momentum=-1"], ["optimizer.momentum", ">= 0"]),
    "optimizer.warmup_ratio": (["optimizer.warmup_ratio=1"], ["optimizer.warmup_ratio", "0 <= r < 1"]),
    "optimizer.schedule": (["optimizer.schedule=nope"], ["optimizer.schedule", "linear, constant"]),
    "optimizer.task_lr": (["+optimizer.task_lr.sst2.nope=1e-3"], ["optimizer.task_lr.sst2.nope", "unknown method"]),
    # trainer
    "trainer.epochs": (["trainer.epochs=0"], ["trainer.epochs", "> 0"]),
    "trainer.method_epochs": (["+trainer.method_epochs.nope=1"], ["trainer.method_epochs.nope", "unknown method"]),
    "trainer.task_epochs": (["+trainer.task_epochs.sst2.nope=1"], ["trainer.task_epochs.sst2.nope", "unknown method"]),
    "trainer.max_steps": (["trainer.max_steps=0"], ["trainer.max_steps", ">= 1"]),
    "trainer.batch_size": (["trainer.batch_size=0"], ["trainer.batch_size", ">= 1"]),
    "trainer.group_by_length": (["trainer.group_by_length=maybe"], ["trainer.group_by_length", "true or false"]),
    "trainer.eval_history": (["trainer.eval_history=often"], ["trainer.eval_history", "true or false"]),
    "trainer.eval_batch_size": (["trainer.eval_batch_size=0"], ["trainer.eval_batch_size", ">= 1"]),
    "trainer.infer_batch_size": (["trainer.infer_batch_size=0"], ["trainer.infer_batch_size", ">= 1"]),
    "trainer.infer_batches": (["trainer.infer_batches=-1"], ["trainer.infer_batches", "batch count"]),
    "trainer.eval_every": (["trainer.eval_every=-1"], ["trainer.eval_every", "step count"]),
    "trainer.log_every": (["trainer.log_every=0"], ["trainer.log_every", ">= 1"]),
    "trainer.grad_clip": (["trainer.grad_clip=0"], ["trainer.grad_clip", "null or > 0"]),
    "trainer.device": (["trainer.device=tpu"], ["trainer.device", "auto, cpu"]),
    "trainer.threads": (["trainer.threads=0"], ["trainer.threads", ">= 1"]),
    "trainer.precision": (["trainer.precision=fp16"], ["trainer.precision", "auto, fp32, bf16"]),
    "trainer.compile": (["trainer.compile=maybe"], ["trainer.compile", "true or false"]),
    "trainer.fast_dropout": (["trainer.fast_dropout=maybe"], ["trainer.fast_dropout", "true or false"]),
    "trainer.dist_timeout_s": (["trainer.dist_timeout_s=0"], ["trainer.dist_timeout_s", ">= 1"]),
    "trainer.deterministic": (["trainer.deterministic=maybe"], ["trainer.deterministic", "true or false"]),
    "trainer.progress": (["trainer.progress=maybe"], ["trainer.progress", "true or false"]),
    "trainer.checkpoint_every": (["trainer.checkpoint_every=-1"], ["trainer.checkpoint_every", "step count"]),
    "trainer.keep_checkpoint": (["trainer.keep_checkpoint=maybe"], ["trainer.keep_checkpoint", "true or false"]),
    "trainer.resume": (["trainer.resume=/nonexistent/run"], ["trainer.resume", "neither a folder nor"]),
    "trainer.select_best": (["trainer.select_best=true"], ["trainer.select_best", "needs a selection split"]),
    # tracking and the top level
    "tracking.enabled": (["tracking.enabled=maybe"], ["tracking.enabled", "true or false"]),
    "tracking.artifact_root": (["tracking.artifact_root=/proc/ptexp/a"], ["tracking.artifact_root", "cannot"]),
    "tracking.experiment": (["tracking.experiment= "], ["tracking.experiment", "non-empty"]),
    "tracking.run_name": (["tracking.run_name= "], ["tracking.run_name: empty"]),
    "seed": (["seed=-1"], ["seed: -1", "0 <= seed < 2**32"]),
    "output_root": (["output_root=/proc/ptexp"], ["output_root", "cannot create '/proc/ptexp'"]),
}

# Their messages (ptexp/tables.py) name the file and the columns found in it instead of a "valid:" part.
NO_VALID = {"data.text_column", "data.text_pair_column", "data.label_column", "data.columns", "data.file_columns"}

# Keys whose wrong values are checked elsewhere, or that no wrong value can reach from here.
NOT_HERE = {
    "tracking.uri": "checked through the real CLI in test_bad_input.py (server unreachable, sqlite, scheme)",
    "data.hub_name": "a wrong name needs the hub, which this machine cannot reach (the hub_path check fails first)",
    "data.hub_train_split": "as data.hub_name: the split names come from the hub's dataset",
    "data.hub_eval_split": "as data.hub_name",
    "data.extra_evals": "set by presets (glue_mnli); Hydra cannot add a typed entry from the command line",
    "tracking.tags": "any name -> text is valid (a wrong type: Hydra's check, as for every typed dict)",
    **{
        f"study.{key}": "read by python -m ptexp.study only: its bad values in tests/test_study.py"
        for key in (
            "grid",
            "method_grid",
            "budget.rule",
            "budget.factor",
            "budget.reference",
            "budget.fill",
            "seeds",
            "name",
            "eval_history",
        )
    },
}


def schema_keys(cls: type = Schema, prefix: str = "") -> list[str]:
    """Every key of the schema: the leaves, and dict- or list-valued keys as one key each."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        optional = typing.get_origin(hint) is not dict
        inner = [a for a in typing.get_args(hint) if dataclasses.is_dataclass(a) and optional]
        nested = hint if dataclasses.is_dataclass(hint) else (inner[0] if inner else None)
        if nested is not None and f.name != "file_columns":
            keys += schema_keys(nested, f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def first_error(args: list[str], folder) -> str:
    """The CLI's path in-process; returns the error line, or fails the test when the value is accepted."""
    argv = ["model=tiny", "trainer.progress=false", "data.max_train_samples=16", "data.max_eval_samples=8"]
    argv += [a.replace("{D}", str(folder)) for a in args]
    if not any(a.startswith("output_root=") for a in argv):
        argv.append(f"output_root={folder / 'outputs'}")
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            check_group_choices(argv)
            check_value_types(argv)
            cfg = make_config(*argv)
            validate_trainer_and_tracking(cfg)
            prepare_config(cfg)
            if cfg.trainer.resume is not False:
                from ptexp.checkpoint import resume_target

                resume_target(cfg, folder / "run", False)
            pick_device(cfg.trainer.device)
            set_up_training(cfg, build_experiment(cfg, torch.device("cpu")))
    except SystemExit as exit_:
        assert exit_.code == 2
        return stderr.getvalue().strip()
    except UserError as err:
        return f"error: {err}"
    pytest.fail(f"accepted: {args}")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("bad_keys")
    (path / "good.csv").write_text("sentence,label\ngreat film,1\ndull film,0\nfine film,1\nbad film,0\n")
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_a_wrong_value_gives_one_line_naming_the_key(case, folder):
    args, needles = CASES[case]
    line = first_error(args, folder)
    assert len(line.splitlines()) == 1 and line.startswith("error: "), line
    assert case in NO_VALID or "valid" in line.lower(), line
    assert len(line) <= 400, line
    for needle in needles:
        assert needle in line, line


def test_every_schema_key_has_a_bad_value_case():
    covered = {case.split(" ")[0] for case in CASES}
    for args, _ in CLI_CASES.values():
        covered |= {a.lstrip("+").split("=")[0] for a in args if "=" in a}
    keys = schema_keys()
    assert "trainer.select_best" in keys and all(any(k.startswith(f"{s}.") for k in keys) for s in SECTIONS)
    missing = [k for k in keys if k not in covered and k not in NOT_HERE]
    assert missing == [], missing

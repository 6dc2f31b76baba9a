"""Structured config schemas, registered in Hydra's ConfigStore by the method registry (:mod:`ptexp.methods`).

The YAML files under ``conf/`` fill in these dataclasses, so a wrong type or an unknown key fails
while Hydra composes the config, before any model or data is loaded. Each method's options are a dataclass
of its own module, a section of the schema that :func:`with_sections` adds. Checks that need more than one
key at a time live in :mod:`ptexp.checks` and in each method's ``check``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, make_dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # the Hydra config tree of this checkout


class Pooling(str, Enum):
    cls = "cls"  # BERT's pooler (dense + tanh) on the [CLS] token, as the tutorial does
    mean = "mean"  # masked mean of the last hidden states over real tokens


class DataSource(str, Enum):
    embedded = "embedded"  # the small sentiment set shipped inside the package
    hub = "hub"  # datasets.load_dataset(hub_path, hub_name); or local files when data_dir is set
    files = "files"  # TSV / CSV / JSONL files named by train_file and eval_file


class Task(str, Enum):
    classification = "classification"  # one label from label_names; cross-entropy; accuracy, macro-F1, ...
    regression = "regression"  # one float per row (e.g. STS-B's 0-5 score); one output, MSE; Pearson, Spearman


class OptimizerName(str, Enum):
    adamw = "adamw"
    adam = "adam"
    sgd = "sgd"


class Precision(str, Enum):
    auto = "auto"  # bf16 autocast (and TF32 matmuls) on a CUDA device that supports bf16; fp32 otherwise
    fp32 = "fp32"  # plain float32 (on CUDA with TF32 matmuls only under auto/bf16)
    bf16 = "bf16"  # bfloat16 autocast on any device, the CPU included (TF32 matmuls for the rest on CUDA)


class Schedule(str, Enum):
    linear = "linear"  # linear warm-up, then linear decay to zero
    constant = "constant"  # linear warm-up, then constant


# A dict-typed field's metadata "shape" (its entries, with an example) is what the CLI's one-line error shows when
# the key is given a list or a single value (ptexp.__main__.check_value_types).


@dataclass
class ModelConfig:
    name: str = MISSING  # short label, used in tags and run names
    name_or_path: str = MISSING  # hub id, local HF folder, or "package:<python package>" for a bundled model
    tokenizer: str | None = None  # defaults to name_or_path
    random_init: bool = False  # build from the config with random weights instead of loading them
    config_overrides: dict[str, Any] = field(
        default_factory=dict,
        metadata={"shape": "{HF config key: value}, e.g. +model.config_overrides.hidden_dropout_prob=0.2"},
    )  # applied to the HF config
    pooling: Pooling = Pooling.cls
    classifier_dropout: float = 0.1
    attn_implementation: str | None = None  # None: the best the model class supports (sdpa, else eager)


@dataclass
class MethodConfig:
    name: str = MISSING  # one of ptexp.methods.METHODS


@dataclass
class FileColumns:
    """Column names of a preset's local files (data_dir) where they differ from the hub's; null: the same."""

    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None


@dataclass
class ExtraEval:
    """A further evaluation split (e.g. MNLI mismatched): a hub split, or a file under data_dir."""

    hub_split: str | None = None
    file: str | None = None


@dataclass
class DataConfig:
    name: str = MISSING
    source: DataSource = MISSING
    task: Task = Task.classification
    hub_path: str | None = None  # e.g. "nyu-mll/glue"
    hub_name: str | None = None  # e.g. "sst2"
    hub_train_split: str = "train"
    hub_eval_split: str = "validation"
    data_dir: str | None = None  # a folder with train_file and eval_file (for source=hub: local GLUE TSVs)
    root: str | None = None  # a folder of task folders (a GLUE download): data_dir = root/folder, unless data_dir set
    folder: str | None = None  # the task's folder in its benchmark's download, e.g. RTE, MRPC, SST-2
    train_file: str | None = None
    eval_file: str | None = None
    extra_evals: dict[str, ExtraEval] = field(
        default_factory=dict, metadata={"shape": "{name: {hub_split: SPLIT, file: FILE}}"}
    )  # e.g. mismatched
    text_column: str = "sentence"
    text_pair_column: str | None = None  # the second text of a sentence pair; null: single sentences
    label_column: str = "label"
    columns: list[str] | None = None  # names of a headerless TSV/CSV's columns, in order (CoLA)
    file_columns: FileColumns = field(default_factory=FileColumns)  # a preset's local-file column names
    label_names: list[str] = field(default_factory=lambda: ["negative", "positive"])  # unused for regression
    label_range: list[float] | None = None  # regression: [low, high] every score must lie in (STS-B: [0, 5]); null: any
    metrics: list[str] = field(default_factory=list)  # the task's metrics beyond the always-logged ones
    primary_metric: str | None = None  # the one that picks the best epoch; null: metrics[0], else accuracy/pearson
    selection_rows: int | None = None  # rows carved from train (seeded by subset_seed) for model selection
    selection_fraction: float | None = None  # or that fraction of train (0 < f < 1); not both
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    subset_seed: int = 0  # the max_*_samples subsets and the selection split use this seed, not the run seed
    max_length: int = 128


@dataclass
class OptimizerConfig:
    name: OptimizerName = OptimizerName.adamw
    lr: float = 3e-5
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    momentum: float = 0.9  # sgd only
    warmup_ratio: float = 0.06
    schedule: Schedule = Schedule.linear
    # replaces lr for that task and method (a sweep across tasks with a recipe each); a task is a data.name or the
    # name of a data preset (glue_sst2 stands for its data.name, sst2)
    task_lr: dict[str, dict[str, float]] = field(
        default_factory=dict, metadata={"shape": "{task: {method: lr}}, e.g. +optimizer.task_lr.glue_rte.full=2e-4"}
    )


@dataclass
class TrainerConfig:
    epochs: float = 3  # may be fractional: 1.5 = one epoch and the first half of the next (steps rounded up)
    # per-method epochs over ``epochs``, for a sweep across methods with a recipe each (experiment=sst2_compare)
    method_epochs: dict[str, float] = field(
        default_factory=dict, metadata={"shape": "{method: epochs}, e.g. +trainer.method_epochs.prefix=1.5"}
    )
    # over ``epochs`` and ``method_epochs`` for that task (as in optimizer.task_lr) and method (glue_compare)
    task_epochs: dict[str, dict[str, float]] = field(
        default_factory=dict,
        metadata={"shape": "{task: {method: epochs}}, e.g. +trainer.task_epochs.glue_cola.prefix=6"},
    )
    max_steps: int | None = None  # when set, overrides epochs
    batch_size: int = 32
    group_by_length: bool = True  # batches of similar length (less padding); false: plain shuffling
    eval_batch_size: int = 128
    infer_batch_size: int = 32  # the inference timing after the final evaluation: rows per batch (ptexp/inference.py)
    infer_batches: int = 5  # ...and batches timed after one warm-up batch; 0 = no timing
    eval_every: int = 0  # evaluate every N optimizer steps; 0 = at the end of each epoch only
    # score the eval splits at every evaluation (their curve, eval/best_*); false: only at the final one, the
    # selection split still at each (a study's jobs: the selection split decides, the final eval is the same)
    eval_history: bool = True
    log_every: int = 10  # log the mean train loss every N steps
    grad_clip: float | None = 1.0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = None  # torch intra-op threads; None keeps torch's default
    precision: Precision = Precision.auto  # auto | fp32 | bf16: autocast dtype (auto: bf16 on CUDA, fp32 on CPU)
    compile: bool = False  # wrap the training forward in torch.compile
    fast_dropout: bool | None = None  # dropout masks from 16-bit random integers (ptexp/fast_dropout.py); None: on CPU
    dist_timeout_s: int = 600  # under torchrun: how long a rank waits for the others in a collective, then fails
    deterministic: bool = True
    progress: bool = True
    checkpoint_every: int = 0  # also checkpoint every N steps; 0 = only at epoch ends and on SIGINT/SIGTERM
    keep_checkpoint: bool = False  # keep ckpt.pt after the run finished (it is dropped by default)
    select_best: bool = False  # restore the trainable parameters of the best step on the selection split, then eval
    # false | true (this job's folder, else the newest run folder under output_root with a checkpoint)
    # | a run folder | an MLflow run id; see ptexp/checkpoint.py
    resume: Any = False


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: str | None = None  # default: sqlite:///<output_root>/mlflow.db (absolute)
    artifact_root: str | None = None  # default: <output_root>/mlartifacts, for new experiments
    experiment: str = "ptexp"
    run_name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)  # extra MLflow tags of the run (a study's job: study_key)


class BudgetRule(str, Enum):
    time = "time"  # a recipe's train seconds <= factor x the reference method's chosen recipe's
    steps = "steps"  # a recipe's optimizer steps <= factor x the reference method's chosen recipe's
    none = "none"  # no budget: every recipe of the grid competes


@dataclass
class BudgetConfig:
    rule: BudgetRule = BudgetRule.time
    factor: float = 1.0
    reference: str = "full"  # the method (a cell's method.name) whose chosen recipe sets each task's budget
    fill: bool = False  # also run the grid at the most whole epochs that fit the budget (rule=time)


# Config keys (prefixes) whose values do not change what a run computes: a study's key leaves them out, and the
# report does not warn when the runs of one group differ in them.
VOLATILE = ("tracking.", "output_root", "trainer.progress", "trainer.threads", "trainer.resume", "seed",
            "trainer.eval_history")  # fmt: skip


@dataclass
class StudyConfig:
    """``python -m ptexp.study``: a recipe grid per (task, model, method) cell on the selection split, then seeds."""

    grid: dict[str, list[Any]] = field(default_factory=dict)  # config key -> values tried, e.g. optimizer.lr
    method_grid: dict[str, dict[str, list[Any]]] = field(default_factory=dict)  # method -> key -> values (wins)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])  # the grid runs with the first
    name: str | None = None  # the study parent run's name
    eval_history: bool = False  # the jobs' trainer.eval_history: false = the dev split scored only at the end


@dataclass
class Config:
    model: ModelConfig = MISSING
    method: MethodConfig = MISSING
    data: DataConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    prefix_length: int | None = None  # P, read by the prefix method
    study: StudyConfig = field(default_factory=StudyConfig)  # read by python -m ptexp.study only
    seed: int = 42
    output_root: str = "outputs"


def with_sections(sections: Mapping[str, type], module: str) -> type:
    """``Config`` plus one optional section per method options dataclass (``{section: dataclass}``, null unless
    the method's YAML sets it), as the dataclass ``Schema``, which ``module`` must bind under that name (pickling
    finds it there, e.g. for a sweep's parallel jobs)."""
    fields = [(name, Optional[options], field(default=None)) for name, options in sections.items()]  # noqa: UP045
    schema = make_dataclass("Schema", fields, bases=(Config,))
    schema.__module__ = module
    return schema


def register_configs(schema: type) -> None:
    """Register ``schema`` (from :func:`with_sections`) as ``base_config``, which conf/config.yaml extends."""
    ConfigStore.instance().store(name="base_config", node=schema)

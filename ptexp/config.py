"""Structured config schemas, registered in Hydra's ConfigStore.

The YAML files under ``conf/`` fill in these dataclasses, so a wrong type or an unknown key fails
while Hydra composes the config, before any model or data is loaded. Checks that need more than one
key at a time live in :func:`validate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

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


class PrefixInit(str, Enum):
    random = "random"  # normal(0, init_std)
    zero = "zero"  # all zeros
    tokens = "tokens"  # the frozen model's own keys/values for init_text (Li & Liang's real-word init)


class PromptInit(str, Enum):
    random = "random"  # normal(0, init_std)
    vocab = "vocab"  # embeddings of random vocabulary tokens
    text = "text"  # embeddings of init_text's tokens, repeated to the prompt length


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


@dataclass
class ModelConfig:
    name: str = MISSING  # short label, used in tags and run names
    name_or_path: str = MISSING  # hub id, local HF folder, or "package:<python package>" for a bundled model
    tokenizer: str | None = None  # defaults to name_or_path
    random_init: bool = False  # build from the config with random weights instead of loading them
    config_overrides: dict[str, Any] = field(default_factory=dict)  # applied to the HF config
    pooling: Pooling = Pooling.cls
    classifier_dropout: float = 0.1
    attn_implementation: str | None = None  # None: the best the model class supports (sdpa, else eager)


@dataclass
class MethodConfig:
    name: str = MISSING  # one of ptexp.methods.METHODS


@dataclass
class PrefixOptions:
    """Options of prefix tuning; the length is the top-level ``prefix_length``."""

    projection: bool = False  # reparameterise the prefix through an MLP (Li & Liang 2021)
    projection_hidden: int = 512
    dropout: float = 0.0  # dropout on the prefix keys and values while training
    init: PrefixInit = PrefixInit.random
    init_std: float = 0.02  # std of the normal init of the prefix (or of its embedding with projection)
    init_text: str = "this movie review is positive or negative"  # for init=tokens
    shift_positions: bool = False  # False: real tokens keep positions 0..L-1; True: P..P+L-1 as in PEFT
    layers: int | None = None  # None: every layer; k: only the top k layers get a prefix


@dataclass
class PromptOptions:
    """Soft prompt tuning (Lester et al. 2021); the length is the top-level ``prefix_length``."""

    init: PromptInit = PromptInit.vocab
    init_std: float = 0.02
    init_text: str = "this movie review is positive or negative"  # for init=text


@dataclass
class LoraOptions:
    """LoRA (Hu et al. 2021) through PEFT."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    target_modules: list[str] = field(default_factory=lambda: ["query", "value"])


@dataclass
class IA3Options:
    """IA3 (Liu et al. 2022) through PEFT; PEFT's default targets for BERT."""

    target_modules: list[str] = field(default_factory=lambda: ["key", "value", "output.dense"])
    feedforward_modules: list[str] = field(default_factory=lambda: ["output.dense"])


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
    extra_evals: dict[str, ExtraEval] = field(default_factory=dict)  # name -> split/file, e.g. mismatched
    text_column: str = "sentence"
    text_pair_column: str | None = None  # the second text of a sentence pair; null: single sentences
    label_column: str = "label"
    columns: list[str] | None = None  # names of a headerless TSV/CSV's columns, in order (CoLA)
    file_columns: FileColumns = field(default_factory=FileColumns)  # a preset's local-file column names
    label_names: list[str] = field(default_factory=lambda: ["negative", "positive"])  # unused for regression
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
    # {data.name: {method: lr}}: replaces lr for that task and method (a sweep across tasks with a recipe each)
    task_lr: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class TrainerConfig:
    epochs: float = 3  # may be fractional: 1.5 = one epoch and the first half of the next (steps rounded up)
    # per-method epochs over ``epochs``, for a sweep across methods with a recipe each (experiment=sst2_compare)
    method_epochs: dict[str, float] = field(default_factory=dict)
    # {data.name: {method: epochs}}: over ``epochs`` and ``method_epochs`` for that task and method (glue_compare)
    task_epochs: dict[str, dict[str, float]] = field(default_factory=dict)
    max_steps: int | None = None  # when set, overrides epochs
    batch_size: int = 32
    group_by_length: bool = True  # batches of similar length (less padding); false: plain shuffling
    eval_batch_size: int = 128
    infer_batch_size: int = 32  # the inference timing after the final evaluation: rows per batch (ptexp/inference.py)
    infer_batches: int = 5  # ...and batches timed after one warm-up batch; 0 = no timing
    eval_every: int = 0  # evaluate every N optimizer steps; 0 = at the end of each epoch only
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


@dataclass
class Config:
    model: ModelConfig = MISSING
    method: MethodConfig = MISSING
    data: DataConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    prefix_length: int | None = None  # P, read by the prefix method
    prefix: PrefixOptions | None = None  # prefix options, set by conf/method/prefix.yaml
    prompt: PromptOptions | None = None  # set by conf/method/prompt.yaml
    lora: LoraOptions | None = None  # set by conf/method/lora.yaml
    ia3: IA3Options | None = None  # set by conf/method/ia3.yaml
    seed: int = 42
    output_root: str = "outputs"


def register_configs() -> None:
    """Register the schemas; conf/config.yaml extends ``base_config``."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)


register_configs()

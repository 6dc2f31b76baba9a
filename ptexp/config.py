"""Structured config schemas, registered in Hydra's ConfigStore.

The YAML files under ``conf/`` fill in these dataclasses, so a wrong type or an unknown key fails
while Hydra composes the config, before any model or data is loaded. Checks that need more than one
key at a time live in :func:`validate`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from ptexp.errors import UserError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # the Hydra config tree of this checkout


class Pooling(str, Enum):
    cls = "cls"  # BERT's pooler (dense + tanh) on the [CLS] token, as the tutorial does
    mean = "mean"  # masked mean of the last hidden states over real tokens


class DataSource(str, Enum):
    embedded = "embedded"  # the small sentiment set shipped inside the package
    hub = "hub"  # datasets.load_dataset(hub_path, hub_name); or local files when data_dir is set
    files = "files"  # TSV / CSV / JSONL files named by train_file and eval_file


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
    attn_implementation: str = "sdpa"


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
class DataConfig:
    name: str = MISSING
    source: DataSource = MISSING
    hub_path: str | None = None  # e.g. "glue"
    hub_name: str | None = None  # e.g. "sst2"
    hub_train_split: str = "train"
    hub_eval_split: str = "validation"
    data_dir: str | None = None  # a folder with train_file and eval_file (for source=hub: local GLUE TSVs)
    train_file: str | None = None
    eval_file: str | None = None
    text_column: str = "sentence"
    label_column: str = "label"
    label_names: list[str] = field(default_factory=lambda: ["negative", "positive"])
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    subset_seed: int = 0  # the max_*_samples subsets are drawn with this seed, the same for every run seed
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


@dataclass
class TrainerConfig:
    epochs: float = 3  # may be fractional: 1.5 = one epoch and the first half of the next (steps rounded up)
    # per-method epochs over ``epochs``, for a sweep across methods with a recipe each (experiment=sst2_compare)
    method_epochs: dict[str, float] = field(default_factory=dict)
    max_steps: int | None = None  # when set, overrides epochs
    batch_size: int = 32
    group_by_length: bool = True  # batches of similar length (less padding); false: plain shuffling
    eval_batch_size: int = 128
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


def validate_trainer_and_tracking(cfg: DictConfig) -> None:
    """The trainer's and tracking's checks: cheap (no torch), so the CLI runs them before loading anything."""

    def need(ok: bool, key: str, problem: str, valid: str) -> None:
        if not ok:
            raise UserError(f"{key}: {problem}; valid: {valid}")

    t = cfg.trainer
    need(t.epochs > 0, "trainer.epochs", f"{t.epochs}", "a number > 0, e.g. 3 or 1.5")
    for method, epochs in t.method_epochs.items():
        need(epochs > 0, f"trainer.method_epochs.{method}", f"{epochs}", "a number > 0, e.g. 3 or 1.5")
    need(t.max_steps is None or t.max_steps >= 1, "trainer.max_steps", f"{t.max_steps}", "null or >= 1")
    need(t.batch_size >= 1, "trainer.batch_size", f"{t.batch_size}", "an integer >= 1")
    need(t.eval_batch_size >= 1, "trainer.eval_batch_size", f"{t.eval_batch_size}", "an integer >= 1")
    need(t.eval_every >= 0, "trainer.eval_every", f"{t.eval_every}", "0 (per epoch) or a step count")
    need(t.log_every >= 1, "trainer.log_every", f"{t.log_every}", "an integer >= 1")
    need(t.grad_clip is None or t.grad_clip > 0, "trainer.grad_clip", f"{t.grad_clip}", "null or > 0")
    need(t.threads is None or t.threads >= 1, "trainer.threads", f"{t.threads}", "null or >= 1")
    need(
        str(getattr(t.precision, "value", t.precision)) in {p.value for p in Precision},
        "trainer.precision",
        f"{t.precision!r}",
        ", ".join(p.value for p in Precision),
    )
    need(t.dist_timeout_s >= 1, "trainer.dist_timeout_s", f"{t.dist_timeout_s}", "seconds, an integer >= 1")
    need(t.checkpoint_every >= 0, "trainer.checkpoint_every", f"{t.checkpoint_every}", "0 (epoch ends) or a step count")
    need(
        isinstance(t.resume, (bool, str)) and t.resume != "",
        "trainer.resume",
        f"{t.resume!r}",
        "false, true, a run folder, or an MLflow run id",
    )
    need(bool(cfg.tracking.experiment.strip()), "tracking.experiment", "empty", "a non-empty experiment name")


def validate(cfg: DictConfig, methods: Mapping[str, Any]) -> None:
    """Checks across keys that the schema alone cannot express. Raises UserError. ``methods``: the method registry
    (name -> spec with ``uses_prefix_length``), passed in by :func:`ptexp.experiment.validate` so that this module
    stays below the methods."""

    def need(ok: bool, key: str, problem: str, valid: str) -> None:
        if not ok:
            raise UserError(f"{key}: {problem}; valid: {valid}")

    need(cfg.method.name in methods, "method.name", f"unknown method {cfg.method.name!r}", ", ".join(methods))
    if methods[cfg.method.name].uses_prefix_length:
        need(cfg.prefix_length is not None, "prefix_length", "missing", "an integer >= 0")
        need(cfg.prefix_length >= 0, "prefix_length", f"{cfg.prefix_length} is negative", "an integer >= 0")
    if cfg.prefix is not None:
        p = cfg.prefix
        need(0 <= p.dropout < 1, "prefix.dropout", f"{p.dropout}", "0 <= p < 1")
        need(p.projection_hidden > 0, "prefix.projection_hidden", "must be positive", "an integer > 0")
        need(
            not (p.projection and p.init == PrefixInit.tokens),
            "prefix.init",
            "tokens cannot initialise a projected prefix",
            "prefix.init=random or zero with prefix.projection=true",
        )
    if cfg.lora is not None:
        need(cfg.lora.r >= 1, "lora.r", f"{cfg.lora.r}", "an integer >= 1")
        need(0 <= cfg.lora.dropout < 1, "lora.dropout", f"{cfg.lora.dropout}", "0 <= p < 1")
    validate_trainer_and_tracking(cfg)
    for method in cfg.trainer.method_epochs:
        need(method in methods, f"trainer.method_epochs.{method}", "unknown method", ", ".join(methods))
    o, d = cfg.optimizer, cfg.data
    need(o.lr > 0, "optimizer.lr", f"{o.lr}", "a positive float such as 3e-5")
    need(o.weight_decay >= 0, "optimizer.weight_decay", f"{o.weight_decay}", ">= 0")
    need(0 <= o.warmup_ratio < 1, "optimizer.warmup_ratio", f"{o.warmup_ratio}", "0 <= r < 1")
    need(len(o.betas) == 2, "optimizer.betas", f"{list(o.betas)}", "two floats, e.g. [0.9,0.999]")
    need(d.max_length >= 2, "data.max_length", f"{d.max_length}", "an integer >= 2")
    need(len(d.label_names) >= 2, "data.label_names", f"{list(d.label_names)}", "at least two names")
    if d.source == DataSource.files:
        for key in ("train_file", "eval_file"):
            need(
                bool(d[key]),
                f"data.{key}",
                "required with data=files",
                "a path to a .tsv, .csv or .jsonl file",
            )
    for key in ("max_train_samples", "max_eval_samples"):
        value = d[key]
        need(value is None or value >= 1, f"data.{key}", f"{value}", "null or an integer >= 1")

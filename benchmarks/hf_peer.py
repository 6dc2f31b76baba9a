"""The peer of benchmarks/tasks.py and peer_speed.py: Hugging Face Trainer + AutoModelForSequenceClassification
fine-tuning every weight at the recipe of ptexp's own config, one run per process.

It takes ``python -m ptexp``'s overrides and composes and resolves ptexp's config as ptexp does
(``optimizer.task_lr``, ``trainer.task_epochs``). From it: the rows (``ptexp.data.load_dataset``: the same train
rows, the selection split held out, the same dev rows), the token ids (``ptexp.data.encode`` at ``data.max_length``;
DataCollatorWithPadding pads), and TrainingArguments (:func:`training_arguments`: lr, weight decay, betas, eps,
warm-up steps as ptexp counts them, schedule, fused AdamW where ptexp fuses it, batch sizes, ptexp's step count,
grad clip, seed, precision; ``trainer.group_by_length`` picks the sampler, ``trainer.select_best`` becomes
``load_best_model_at_end`` on the selection split). The head is the model class's, on the first token
(``model.pooling=cls``). The eval splits are scored with ``ptexp.metrics``; the run goes to ptexp's MLflow store
with tag ``ptexp.method`` = ``--label`` and tag ``ptexp.peer``, ptexp's params of the config plus ``peer.*``,
``eval/<metric>``, ``time/train_s`` (``trainer.train()`` less its evaluations and checkpoint writes),
``train/steps``, and the predictions artifact. A key the peer cannot honour (another method or optimizer, mean
pooling, resume) is one ``error:`` line, exit status 2.

    python benchmarks/hf_peer.py --label hf_trainer_grouped data=glue_rte data.data_dir=../shared/data/glue/RTE \\
        data.selection_rows=250 optimizer.lr=1e-4 trainer.epochs=3 model.pooling=cls seed=1 \\
        output_root=outputs/benchmarks tracking.experiment=tasks-rte
"""

from __future__ import annotations

import math
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from ptexp.errors import OneLineParser, UserError, need

if TYPE_CHECKING:
    from ptexp.data import Dataset, EncodedSplit
    from ptexp.evaluation import SplitOutputs, TaskSpec

PEER_TAG = "ptexp.peer"  # every run of this script carries it; benchmarks/tasks_report.py takes no peer run without
SCHEDULES = {"linear": "linear", "constant": "constant_with_warmup"}  # optimizer.schedule -> lr_scheduler_type


def text(value) -> str:
    """An enum's value, else the value, as text."""
    return str(getattr(value, "value", value))


def peer_config(overrides: list[str]) -> DictConfig:
    """ptexp's config of ``overrides``, composed, checked and resolved as ``python -m ptexp`` does it, and checked
    for what the peer can run. UserError for a mistake."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from ptexp.experiment import prepare_config, use_method_epochs
    from ptexp.store import short
    from ptexp.study.spec import compose_config

    try:
        cfg = compose_config(overrides)
    except (HydraException, OmegaConfBaseException) as err:
        raise UserError(f"overrides: {short(err)}; valid: python -m ptexp's groups and keys") from None
    prepare_config(cfg)
    use_method_epochs(cfg)
    check_peer(cfg)
    return cfg


def check_peer(cfg: DictConfig) -> None:
    """The keys whose value the peer cannot run as ptexp would. Raises UserError."""
    method, optimizer, pooling = cfg.method.name, cfg.optimizer.name, cfg.model.pooling
    need(method == "full", "method", f"{method}: the peer fine-tunes every weight", "full")
    need(optimizer == "adamw", "optimizer", f"{text(optimizer)}: the peer runs AdamW", "adamw")
    head = f"{text(pooling)}: AutoModelForSequenceClassification's head reads the first token"
    need(pooling == "cls", "model.pooling", head, "cls")
    need(cfg.trainer.resume is False, "trainer.resume", f"{cfg.trainer.resume!r}: the peer does not resume", "false")
    need(":" not in cfg.trainer.device, "trainer.device", f"{cfg.trainer.device!r}", "auto, cpu or cuda")


def training_arguments(cfg: DictConfig, train_rows: int, folder: Path, device):
    """Trainer's arguments for ``train_rows`` training rows: the recipe of ``cfg`` (see the module)."""
    import torch
    from transformers import TrainingArguments

    from ptexp.devices import autocast_dtype, fused_optimizer, use_tf32
    from ptexp.encoding import planned_steps
    from ptexp.metrics import METRICS, metric_names

    t, o = cfg.trainer, cfg.optimizer
    steps, select, primary = planned_steps(train_rows, t), bool(t.select_best), metric_names(cfg.data)[1]
    return TrainingArguments(
        output_dir=str(folder), seed=cfg.seed, max_steps=steps, per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size, learning_rate=o.lr, weight_decay=o.weight_decay,
        adam_beta1=o.betas[0], adam_beta2=o.betas[1], adam_epsilon=o.eps,
        optim="adamw_torch_fused" if fused_optimizer(o, device) else "adamw_torch",
        lr_scheduler_type=SCHEDULES[text(o.schedule)],
        warmup_steps=math.ceil(o.warmup_ratio * steps),  # ptexp.optim's count
        max_grad_norm=t.grad_clip or 0.0, train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        bf16=autocast_dtype(t.precision, device) == torch.bfloat16,
        tf32=True if use_tf32(t.precision, device) else None,
        use_cpu=device.type == "cpu", torch_compile=bool(t.compile),
        eval_strategy=("steps" if t.eval_every else "epoch") if select else "no", eval_steps=t.eval_every or None,
        save_strategy="best" if select else "no", save_only_model=True, load_best_model_at_end=select,
        metric_for_best_model=primary if select else None,
        greater_is_better=METRICS[primary].higher_is_better if select else None,
        logging_strategy="no", report_to=[], disable_tqdm=not t.progress, dataloader_num_workers=0,
    )  # fmt: skip


def features(split: EncodedSplit, token_types: bool) -> list[dict]:
    """Trainer's rows: ptexp's token ids (unpadded), the attention mask, the token types of a pair where the model
    reads them (``ptexp.families.takes_token_types``, as ptexp passes them), and the label."""
    rows = []
    for i, ids in enumerate(split.input_ids):
        row = {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": split.labels[i]}
        if split.token_type_ids is not None and token_types:
            row["token_type_ids"] = split.token_type_ids[i]
        rows.append(row)
    return rows


def encoded_splits(cfg: DictConfig, data: Dataset, tokenizer) -> dict[str, EncodedSplit]:
    """Each split's token ids as ptexp's trainer makes them (``ptexp.data.encode`` at ``data.max_length``, through
    the same token cache): train, eval, ``eval_NAME`` for further eval splits, and selection where carved."""
    from ptexp.data import encode

    splits = {"train": data.train, "eval": data.eval, **{f"eval_{k}": s for k, s in data.extra_evals.items()}}
    splits |= {"selection": data.selection} if data.selection is not None else {}
    cache = Path(cfg.output_root).resolve() / "cache" / "tokens"
    return {name: encode(split, tokenizer, cfg.data.max_length, cache) for name, split in splits.items()}


def load_model(cfg: DictConfig, num_labels: int):
    """AutoModelForSequenceClassification of ``model.name_or_path`` (random weights for ``model.random_init``, as
    ptexp builds them), with ``model.config_overrides``, ``model.classifier_dropout`` and ``num_labels`` outputs."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from ptexp.models import resolve_model_path

    m = cfg.model
    source = resolve_model_path(m.name_or_path)
    options = {**m.config_overrides, "num_labels": num_labels, "classifier_dropout": m.classifier_dropout}
    if m.random_init:
        config = AutoConfig.from_pretrained(source, **options)
        torch.manual_seed(cfg.seed)
        return AutoModelForSequenceClassification.from_config(config, attn_implementation=m.attn_implementation)
    return AutoModelForSequenceClassification.from_pretrained(source, attn_implementation=m.attn_implementation,
                                                              **options)  # fmt: skip


def score(trainer, split: EncodedSplit, token_types: bool, spec: TaskSpec) -> SplitOutputs:
    """The model's outputs on every row of ``split``, in its order (``Trainer.predict``), as ptexp keeps them."""
    import numpy as np
    import torch

    from ptexp.evaluation import SplitOutputs
    from ptexp.metrics import task_loss

    logits = np.asarray(trainer.predict(features(split, token_types)).predictions, dtype=np.float32)
    logits = logits.reshape(len(split), -1)
    loss = task_loss(torch.from_numpy(logits), torch.tensor(split.labels), spec.task, "sum").item()
    return SplitOutputs(logits, list(split.labels), loss)


def save_clock():
    """A Trainer callback whose ``seconds`` are the time Trainer spends writing checkpoints (``trainer.select_best``:
    each new best model), from the end of an evaluation (``on_evaluate``) to the save after it (``on_save``). ptexp
    keeps its best step in memory, so ``time/train_s`` leaves them out, as it leaves the evaluations out."""
    from transformers import TrainerCallback

    class SaveClock(TrainerCallback):
        seconds, mark = 0.0, None

        def on_evaluate(self, args, state, control, **kwargs):
            self.mark = time.perf_counter()

        def on_save(self, args, state, control, **kwargs):
            if self.mark is not None:
                self.seconds, self.mark = self.seconds + time.perf_counter() - self.mark, None

    return SaveClock()


def run_peer(cfg: DictConfig, label: str) -> dict[str, float]:
    """Fine-tune, time ``trainer.train()``, score the eval splits with ptexp's metrics, log to MLflow; the metrics."""
    import torch
    from transformers import DataCollatorWithPadding, PrinterCallback, Trainer, set_seed

    from ptexp.data import load_dataset
    from ptexp.devices import pick_device
    from ptexp.evaluation import TaskSpec
    from ptexp.experiment import check_max_length
    from ptexp.families import takes_token_types
    from ptexp.metrics import task_metrics
    from ptexp.models import load_tokenizer
    from ptexp.store import now_ms

    t, spec, device = cfg.trainer, TaskSpec.of(cfg.data), pick_device(cfg.trainer.device)
    if t.threads:
        torch.set_num_threads(t.threads)
    set_seed(cfg.seed)  # the new head's initial weights
    if t.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)  # as ptexp's trainer sets it
    data, tokenizer = load_dataset(cfg.data), load_tokenizer(cfg.model)
    model = load_model(cfg, data.num_labels)
    check_max_length(cfg.data.max_length, tokenizer, model.base_model, pairs=data.train.text_pairs is not None)
    types, encoded = takes_token_types(model.base_model), encoded_splits(cfg, data, tokenizer)
    with tempfile.TemporaryDirectory(prefix="hf-peer-") as scratch:
        trainer = Trainer(
            model=model, args=training_arguments(cfg, len(encoded["train"]), Path(scratch), device),
            train_dataset=features(encoded["train"], types), data_collator=DataCollatorWithPadding(tokenizer),
            eval_dataset=features(encoded["selection"], types) if t.select_best else None, processing_class=tokenizer,
            compute_metrics=lambda p: task_metrics(spec.metrics, p.predictions, p.label_ids, spec.task),
            callbacks=[saves := save_clock()],
        )  # fmt: skip
        trainer.remove_callback(PrinterCallback)  # its log lines (trainer.progress=false) would fill stdout
        started_ms, started = now_ms(), time.perf_counter()
        output = trainer.train()
        wall = time.perf_counter() - started
        kept = {name: score(trainer, split, types, spec) for name, split in encoded.items() if name.startswith("eval")}
    eval_s = sum(entry.get("eval_runtime", 0.0) for entry in trainer.state.log_history)
    result = {k: v for name, outputs in kept.items() for k, v in outputs.metrics(spec, name).items()}
    result |= {
        "time/train_s": wall - eval_s - saves.seconds, "time/eval_s": eval_s, "time/save_s": saves.seconds,
        "time/train_wall_s": wall, "train/steps": output.global_step, "train/loss": output.training_loss,
        "params/total": sum(p.numel() for p in model.parameters()), "params/trainable_pct": 100.0,
        "torch/threads": torch.get_num_threads(),
        **{f"data/{name}_rows": len(split) for name, split in encoded.items()},
    }  # fmt: skip
    if t.select_best and trainer.state.best_metric is not None:
        result |= {f"selection/best_{spec.primary}": trainer.state.best_metric,
                   "selection/best_step": trainer.state.best_global_step or 0}  # fmt: skip
    if cfg.tracking.enabled:
        log_run(cfg, label, result, kept, started_ms, trainer.args, device)
    return result


def log_run(cfg: DictConfig, label: str, result: dict, kept: dict, started_ms: int, args, device) -> None:
    """One FINISHED MLflow run in ptexp's store: tags, ptexp's params of ``cfg`` plus ``peer.*``, ``result``, and each
    eval split's predictions (``predictions/<split>.jsonl``, :mod:`ptexp.predictions`)."""
    import torch
    import transformers
    from mlflow.entities import Metric, Param

    from ptexp.evaluation import TaskSpec
    from ptexp.predictions import FOLDER, write_predictions
    from ptexp.store import connect, now_ms
    from ptexp.tracking import config_params

    spec = TaskSpec.of(cfg.data)
    client, experiment_id = connect(cfg)
    tags = {"ptexp.method": label, PEER_TAG: "hf_trainer", "ptexp.model": cfg.model.name, "ptexp.data": cfg.data.name,
            "ptexp.task": spec.task.value, "ptexp.primary_metric": spec.primary, "device": str(device),
            "version.transformers": transformers.__version__, "version.torch": torch.__version__,
            **cfg.tracking.tags}  # fmt: skip
    peer = {"peer.model_class": "AutoModelForSequenceClassification", "peer.optim": text(args.optim),
            "peer.lr_scheduler_type": text(args.lr_scheduler_type), "peer.warmup_steps": str(args.warmup_steps),
            "peer.max_steps": str(args.max_steps), "peer.sampler": args.train_sampling_strategy,
            "peer.load_best_model_at_end": str(args.load_best_model_at_end)}  # fmt: skip
    name = f"{label}-{cfg.model.name}-{cfg.data.name}-s{cfg.seed}"
    run_id = client.create_run(experiment_id, start_time=started_ms, tags=tags, run_name=name).info.run_id
    params = [Param(k, v[:6000]) for k, v in (config_params(cfg) | peer).items()]
    metrics = [Metric(k, float(v), now_ms(), int(result["train/steps"])) for k, v in result.items()]
    for i in range(0, max(len(params), len(metrics)), 100):
        client.log_batch(run_id, params=params[i : i + 100], metrics=metrics[i : i + 100])
    with tempfile.TemporaryDirectory(prefix="hf-peer-predictions-") as folder:
        for split, outputs in kept.items():
            write_predictions(Path(folder) / f"{split}.jsonl", outputs, spec.task)
        client.log_artifacts(run_id, folder, FOLDER)
    client.set_terminated(run_id, "FINISHED")


def main(argv: list[str] | None = None) -> int:
    from ptexp.__main__ import check_group_choices, check_value_types

    parser = OneLineParser(prog="benchmarks/hf_peer.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", help="the ptexp.method tag; default hf_trainer_grouped, or hf_trainer (random)")
    parser.add_argument("overrides", nargs="*", help="python -m ptexp's overrides (method=full)")
    args = parser.parse_args(argv)
    check_group_choices(args.overrides)
    check_value_types(args.overrides)
    try:
        label = args.label
        need(label is None or re.fullmatch(r"[a-z0-9_]+", label) is not None, "--label", f"{label!r}",
             "lower-case letters, digits and _")  # fmt: skip
        cfg = peer_config(args.overrides)
        label = label or ("hf_trainer_grouped" if cfg.trainer.group_by_length else "hf_trainer")
        result = run_peer(cfg, label)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    shown = ", ".join(f"{k} {v:.4g}" for k, v in result.items() if k.startswith(("eval/", "time/train_s", "train/")))
    print(f"[hf_peer] {label} {cfg.data.name} seed {cfg.seed}: {shown}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The common trainer: builds one experiment from its config and runs the one training loop every method shares."""

from __future__ import annotations

import math
import platform
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn
from torch.utils.data import BatchSampler, RandomSampler
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from ptexp.adapters import adapter_bytes, backbone_fingerprint, save_adapter
from ptexp.checkpoint import (
    CKPT,
    check_resumable,
    load_checkpoint,
    read_result,
    restore,
    resume_target,
    resumed_config,
    rewind_metrics,
    rng_states,
    save_checkpoint,
    set_rng_states,
    write_result,
)
from ptexp.config import OptimizerConfig, OptimizerName, Schedule, validate
from ptexp.data import Collator, Dataset, EncodedSplit, LengthGroupedBatches, encode, load_dataset
from ptexp.devices import (
    autocast,
    autocast_dtype,
    fused_optimizer,
    peak_memory_mb,
    pick_device,
    use_tf32,
    wants_fast_dropout,
)
from ptexp.distributed import Dist, distributed, share_run_dir, torchrun_world, wrap_for_training
from ptexp.errors import TrainingDiverged, UserError
from ptexp.fast_dropout import use_fast_dropout
from ptexp.methods import METHODS, build_model
from ptexp.models import SequenceClassifier, count_parameters, load_backbone, load_tokenizer
from ptexp.signals import Interrupted, StopSignals
from ptexp.tracking import NullTracker, RunTracker, config_params


def prepare_config(cfg: DictConfig) -> None:
    """Fail on unset mandatory keys, drop options the chosen method does not read, then validate."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise UserError(f"{missing[0]}: required but not set; give it on the command line, e.g. {missing[0]}=...")
    spec = METHODS.get(cfg.method.name)
    if spec is not None and not spec.uses_prefix_length and cfg.prefix_length is not None:
        print(f"[ptexp] note: prefix_length does not apply to method={spec.name}; ignored", file=sys.stderr)
        with open_dict(cfg):
            cfg.prefix_length = None
    validate(cfg)


def use_method_epochs(cfg: DictConfig) -> None:
    """Take this method's ``trainer.method_epochs`` as ``trainer.epochs``, so params, checkpoints and adapters
    record the epochs that run."""
    epochs = cfg.trainer.method_epochs.get(cfg.method.name)
    if epochs is not None and epochs != cfg.trainer.epochs:
        print(
            f"[ptexp] note: trainer.method_epochs.{cfg.method.name}={epochs:g} replaces trainer.epochs="
            f"{cfg.trainer.epochs:g} for this method",
            file=sys.stderr,
        )
        cfg.trainer.epochs = epochs


@dataclass
class Experiment:
    dataset: Dataset
    tokenizer: PreTrainedTokenizerBase
    model: nn.Module
    base_fingerprint: str  # of the loaded backbone, before the method touches it


def build_experiment(cfg: DictConfig, device: torch.device) -> Experiment:
    """Data, tokenizer, and the backbone + head wrapped by the method (also used by ``ptexp.evaluate``)."""
    dataset = load_dataset(cfg.data)
    tokenizer = load_tokenizer(cfg.model)
    backbone = load_backbone(cfg.model, cfg.seed)
    fingerprint = backbone_fingerprint(backbone)
    classifier = SequenceClassifier(backbone, len(dataset.label_names), cfg.model.pooling, cfg.model.classifier_dropout)
    return Experiment(dataset, tokenizer, build_model(cfg, classifier).to(device), fingerprint)


def run_experiment(
    cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None, in_sweep: bool = False
) -> dict[str, float]:
    """Load data and model, wrap it with the method, train, evaluate, save the adapter and track.

    ``overrides`` are the command-line overrides that composed ``cfg``; the adapter keeps them so that
    ``ptexp.evaluate`` can rebuild the same model. With ``trainer.resume`` the run continues in the folder it
    names (see :mod:`ptexp.checkpoint`); ``in_sweep`` says this is one job of a sweep. Returns the final metrics.

    Under torchrun (``WORLD_SIZE`` > 1) every process runs this: one DistributedDataParallel run in rank 0's run
    folder, where only rank 0 logs and writes; every rank returns the same metrics (less ``adapter/bytes``).
    """
    prepare_config(cfg)
    use_method_epochs(cfg)
    if torchrun_world() > 1 and in_sweep:
        raise UserError("-m: a sweep cannot run under torchrun; valid: one torchrun command per run")
    with distributed(cfg) as dist:
        if dist.enabled:
            run_dir = share_run_dir(dist, run_dir)
        return _run_experiment(cfg, run_dir, overrides, in_sweep, dist)


def _run_experiment(
    cfg: DictConfig, run_dir: Path, overrides: list[str] | None, in_sweep: bool, dist: Dist
) -> dict[str, float]:
    state = None
    target = dist.decide(lambda: resume_target(cfg, run_dir, in_sweep))
    if target is not None:
        done = read_result(target)
        if done is not None:
            if dist.main:
                print(f"[ptexp] {target} already finished; nothing to resume", flush=True)
            return done
        state = load_checkpoint(target)  # every rank reads the same file
        cfg = resumed_config(cfg, state["meta"]["config"], overrides)
        if dist.main:
            rewind_metrics(target, state)
        overrides = state["meta"].get("overrides", overrides)  # the original command's, for the adapter
        prepare_config(cfg)
        run_dir = target
    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
    t = cfg.trainer
    if t.threads:
        torch.set_num_threads(t.threads)
    transformers.set_seed(cfg.seed, deterministic=False)
    if t.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    device = dist.device if dist.enabled else pick_device(t.device)
    amp = autocast_dtype(t.precision, device)
    tf32 = use_tf32(t.precision, device)
    if tf32:
        torch.set_float32_matmul_precision("high")  # TF32 tensor cores for fp32 matmuls (torch.backends.cuda)
    say = print if dist.main else (lambda *args, **kwargs: None)
    with StopSignals() as stop:
        # Rank 0 connects first: an unreachable store fails every rank before any work.
        trackers: list = []
        dist.decide(lambda: trackers.append(RunTracker(cfg, run_dir)))
        tracker = trackers[0] if trackers else NullTracker(run_dir)

        built = build_experiment(cfg, device)
        dataset, tokenizer, model = built.dataset, built.tokenizer, built.model
        if wants_fast_dropout(t.fast_dropout, device):
            use_fast_dropout(model)
        if state is not None:
            check_resumable(state, model, built.base_fingerprint, run_dir)
        token_cache = Path(cfg.output_root).resolve() / "cache" / "tokens"  # shared by every job of a sweep
        train_set = encode(dataset.train, tokenizer, cfg.data.max_length, token_cache)
        eval_set = encode(dataset.eval, tokenizer, cfg.data.max_length, token_cache)
        total, trainable = count_parameters(model)
        counts = {
            "params/total": total,
            "params/trainable": trainable,
            "params/trainable_pct": 100 * trainable / total,
        }
        name = run_name(cfg)
        tags = run_tags(cfg, dataset, device, amp, tf32, dist, state)
        tracker.start(name, config_params(cfg), tags, resume=state is not None)
        try:
            if state is None:
                tracker.log_metrics({**counts, "data/train_rows": len(train_set), "data/eval_rows": len(eval_set)}, 0)
                for artifact in ("config.yaml", "overrides.yaml"):
                    if (run_dir / ".hydra" / artifact).exists():
                        tracker.log_artifact(run_dir / ".hydra" / artifact)
            else:
                say(f"[ptexp] resuming {run_dir} at step {state['loop']['step']}", flush=True)
            processes = f" on {dist.world} processes ({dist.backend})" if dist.enabled else ""
            say(
                f"[ptexp] {name}: {trainable:,} of {total:,} parameters train ({counts['params/trainable_pct']:.3f}%); "
                f"{len(train_set)} train / {len(eval_set)} eval rows{processes}; {tracker.url_hint}",
                flush=True,
            )
            meta = {
                "config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
                "fingerprint": built.base_fingerprint,
                "overrides": list(overrides or []),
            }
            result = train(
                model,
                train_set,
                eval_set,
                cfg,
                tracker,
                device,
                Collator(tokenizer.pad_token_id),
                run_dir=run_dir,
                resume=state,
                stop=stop,
                meta=meta,
                dist=dist,
                amp=amp,
            )
            if dist.main:
                adapter_dir = save_adapter(
                    model,
                    cfg,
                    run_dir / "adapter",
                    built.base_fingerprint,
                    overrides or [],
                    dataset.label_names,
                    result,
                )
                result["adapter/bytes"] = adapter_bytes(adapter_dir)
                tracker.log_metrics({"adapter/bytes": result["adapter/bytes"]}, result["train/steps"])
                tracker.log_artifacts(adapter_dir, "adapter")
                tracker.log_artifact(tracker.metrics_file)
        except BaseException as err:
            tracker.set_tag("ptexp.error", f"{type(err).__name__}: {err}"[:5000])
            tracker.finish("KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
            if isinstance(err, KeyboardInterrupt) and dist.main and (run_dir / CKPT).is_file():
                again = resume_command(run_dir, dist, in_sweep)
                print(f"[ptexp] checkpoint saved in {run_dir}; go on with: {again}", file=sys.stderr, flush=True)
            raise
        result = {**counts, **result}
        if dist.main:
            write_result(run_dir, result, t.keep_checkpoint)
        tracker.finish("FINISHED")
    return result


def run_name(cfg: DictConfig) -> str:
    """``tracking.run_name``, else ``METHOD[-P<prefix_length>]-MODEL-DATA-s<seed>``."""
    seed = f"s{cfg.seed}"
    prefix = f"-P{cfg.prefix_length}" if cfg.prefix_length is not None else ""
    return cfg.tracking.run_name or f"{cfg.method.name}{prefix}-{cfg.model.name}-{cfg.data.name}-{seed}"


def run_tags(
    cfg: DictConfig,
    dataset: Dataset,
    device: torch.device,
    amp: torch.dtype | None,
    tf32: bool,
    dist: Dist,
    state: dict | None,
) -> dict[str, str]:
    """The run's MLflow tags: what it trains on, the versions, the device and the effective speed options."""
    tags = {
        "ptexp.method": cfg.method.name,
        "ptexp.model": cfg.model.name,
        "ptexp.data": cfg.data.name,
        "ptexp.train_origin": dataset.train.origin,
        "ptexp.eval_origin": dataset.eval.origin,
        "version.torch": torch.__version__,
        "version.transformers": transformers.__version__,
        "version.python": platform.python_version(),
        "device": str(device),
        # the effective speed options (trainer.precision=auto resolves per device)
        "ptexp.precision": "bf16" if amp == torch.bfloat16 else "fp32",
        "ptexp.tf32": str(tf32).lower(),
        "ptexp.fused_optimizer": str(fused_optimizer(cfg.optimizer, device)).lower(),
        "ptexp.compile": str(bool(cfg.trainer.compile)).lower(),
        "ptexp.fast_dropout": str(wants_fast_dropout(cfg.trainer.fast_dropout, device)).lower(),
        "ptexp.world_size": str(dist.world),
    }
    if dist.enabled:
        tags["ptexp.dist_backend"] = dist.backend
    if state is not None:
        tags["ptexp.resumed_at_step"] = str(state["loop"]["step"])
    return tags


def resume_command(run_dir: Path, dist: Dist, in_sweep: bool) -> str:
    """The command that continues an interrupted run from its checkpoint."""
    launcher = f"torchrun --nproc_per_node={dist.world}" if dist.enabled else "python"
    if in_sweep:
        return f"the same sweep command with trainer.resume=true hydra.sweep.dir={run_dir.parent}"
    return f"{launcher} -m ptexp trainer.resume={run_dir}"


def make_optimizer(model: nn.Module, cfg: OptimizerConfig, fused: bool = False) -> torch.optim.Optimizer:
    """Weight decay on matrices only (not on biases or LayerNorm weights). ``fused``: Adam(W)'s fused kernel."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    if cfg.name == OptimizerName.sgd:
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    kind = torch.optim.AdamW if cfg.name == OptimizerName.adamw else torch.optim.Adam
    extra = {"fused": True} if fused else {}
    return kind(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, **extra)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimizerConfig, total_steps: int):
    warmup = math.ceil(cfg.warmup_ratio * total_steps)
    if cfg.schedule == Schedule.constant:
        return transformers.get_constant_schedule_with_warmup(optimizer, warmup)
    return transformers.get_linear_schedule_with_warmup(optimizer, warmup, total_steps)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    data: EncodedSplit,
    batch_size: int,
    collate: Collator,
    device,
    dist: Dist | None = None,
    amp: torch.dtype | None = None,
) -> dict:
    """Loss, accuracy and macro-F1 over ``data``; rows sorted by length so batches carry little padding.

    Under torchrun each rank evaluates every ``world``-th of those batches (the very batches a single process
    would form), and the predictions and loss sums are gathered, so every rank returns the whole set's metrics.
    ``amp``: the autocast dtype the run trains with."""
    dist = dist or Dist()
    model.eval()
    order = sorted(range(len(data)), key=lambda i: len(data.input_ids[i]))
    starts = list(range(0, len(order), batch_size))[dist.rank :: dist.world]
    loss_sum, predictions, labels = 0.0, [], []
    for start in starts:
        batch = collate([data[i] for i in order[start : start + batch_size]])
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(amp, device):
            logits = model(batch["input_ids"], batch["attention_mask"])
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, batch["labels"], reduction="sum").item()
        predictions += logits.argmax(-1).tolist()
        labels += batch["labels"].tolist()
    if dist.enabled:
        parts = dist.gather((loss_sum, predictions, labels))
        loss_sum = sum(part[0] for part in parts)
        predictions = [p for part in parts for p in part[1]]
        labels = [y for part in parts for y in part[2]]
    return {
        "eval/loss": loss_sum / len(labels),
        "eval/accuracy": sum(p == y for p, y in zip(predictions, labels, strict=True)) / len(labels),
        "eval/macro_f1": macro_f1(predictions, labels),
    }


def macro_f1(predictions: list[int], labels: list[int]) -> float:
    scores = []
    for c in sorted(set(labels) | set(predictions)):
        tp = sum(p == c and y == c for p, y in zip(predictions, labels, strict=True))
        predicted, actual = predictions.count(c), labels.count(c)
        scores.append(2 * tp / (predicted + actual) if predicted + actual else 0.0)
    return sum(scores) / len(scores)


def make_batches(train_set: EncodedSplit, t, generator: torch.Generator):
    """An iterable of index lists, one per batch, reshuffled by ``generator`` on every pass."""
    if t.group_by_length:
        return LengthGroupedBatches([len(ids) for ids in train_set.input_ids], t.batch_size, generator)
    return BatchSampler(RandomSampler(train_set, generator=generator), t.batch_size, drop_last=False)


def check_finite(loss: float, step: int, cfg: DictConfig) -> None:
    if not math.isfinite(loss):
        raise TrainingDiverged(
            f"loss became {loss} at step {step} (optimizer.lr={cfg.optimizer.lr}); "
            "lower optimizer.lr or set trainer.grad_clip"
        )


def train(
    model: nn.Module,
    train_set: EncodedSplit,
    eval_set: EncodedSplit,
    cfg: DictConfig,
    tracker: RunTracker,
    device: torch.device,
    collate: Collator,
    run_dir: Path | None = None,
    resume: dict | None = None,
    stop: StopSignals | None = None,
    meta: dict | None = None,
    dist: Dist | None = None,
    amp: torch.dtype | None = None,
) -> dict[str, float]:
    """The loop: shuffle, forward, cross-entropy, backward, clip, step; log, evaluate and checkpoint on schedule.

    With ``run_dir`` it checkpoints every ``trainer.checkpoint_every`` steps, at each epoch end and when ``stop``
    caught SIGINT/SIGTERM (then it raises :class:`Interrupted`); ``resume`` is a loaded checkpoint to go on from.
    ``amp`` is the autocast dtype (None: fp32).

    Under torchrun (``dist``) every rank draws the same global batches (``trainer.batch_size`` rows) from the same
    seeded generator and trains on its share, rows ``rank::world``; each rank's loss is its rows' loss sum times
    ``world / global rows``, so DDP's average of the gradients is the gradient of the mean over the global batch,
    as on one process. Loss, token counts and the stop request are summed over the ranks at every step; rank 0
    logs and checkpoints.
    """
    t = cfg.trainer
    dist = dist or Dist()
    stop = stop or StopSignals()
    generator = torch.Generator().manual_seed(cfg.seed)
    batches = make_batches(train_set, t, generator)
    total_steps = t.max_steps or math.ceil(round(len(batches) * t.epochs, 6))  # round: 625 * 1.4 is 875.0000001
    optimizer = make_optimizer(model, cfg.optimizer, fused=fused_optimizer(cfg.optimizer, device))
    scheduler = make_scheduler(optimizer, cfg.optimizer, total_steps)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def run_eval(at_step: int) -> dict[str, float]:
        started = time.perf_counter()
        metrics = evaluate(model, eval_set, t.eval_batch_size, collate, device, dist, amp)
        s["eval_s"] += time.perf_counter() - started
        s["best"] = max(s["best"], metrics["eval/accuracy"])
        tracker.log_metrics({**metrics, "eval/best_accuracy": s["best"]}, at_step)
        if dist.main:
            bar.write(
                f"[ptexp] step {at_step}: eval loss {metrics['eval/loss']:.4f}  "
                f"accuracy {metrics['eval/accuracy']:.4f}  macro-F1 {metrics['eval/macro_f1']:.4f}"
            )
        return metrics

    def checkpoint() -> None:
        nonlocal clock
        s["elapsed_s"], clock = s["elapsed_s"] + time.perf_counter() - clock, time.perf_counter()
        if run_dir is None:
            return
        rng_ranks = dist.gather(rng_states()) if dist.enabled else None  # every rank's, for an exact resume
        if dist.main:
            s["metrics_bytes"] = tracker.metrics_file.stat().st_size if tracker.metrics_file.exists() else 0
            meta_now = {**(meta or {}), "run_id": tracker.run_id, "world_size": dist.world}
            save_checkpoint(run_dir, model, optimizer, scheduler, s, meta_now, rng_ranks)

    def agree_to_stop(any_rank: bool) -> bool:
        """``any_rank``: whether SIGINT/SIGTERM reached any rank (under torchrun, summed over the ranks at the
        same step), so that every rank checkpoints and stops at the same step; one signalled late stops later."""
        if any_rank and not stop.requested:
            stop.signum = signal.SIGTERM  # another rank was signalled
        return any_rank

    # The loop's whole state: what a checkpoint saves besides weights, optimizer, scheduler and RNGs.
    # epoch_rng is the data generator's state when the current epoch began; position counts its batches done.
    s = {
        "step": 0,
        "epoch": 0,
        "position": 0,
        "epoch_rng": generator.get_state(),
        "samples": 0,
        "real_tokens": 0,
        "padded_tokens": 0,
        "window_loss": 0.0,
        "window_steps": 0,
        "best": 0.0,
        "elapsed_s": 0.0,  # wall time of the loop (evaluations included), over every process that ran it
        "eval_s": 0.0,
    }
    if resume is not None:
        s.update(restore(resume, model, optimizer, scheduler))
        generator.set_state(s["epoch_rng"])
        ranks = resume.get("rng_ranks") or []
        set_rng_states(ranks[dist.rank] if len(ranks) == dist.world else resume["rng"])
    elif dist.rank > 0:
        torch.manual_seed(cfg.seed + 1_000_003 * dist.rank)  # dropout masks of its own on every rank
    net = wrap_for_training(model, t, dist, train_set, collate, device)
    window_samples, clock, window_start = 0, time.perf_counter(), time.perf_counter()
    agreed = False  # under torchrun: whether a stop request reached any rank by this step's sum
    show = t.progress and dist.main
    bar = tqdm(total=total_steps, initial=s["step"], desc=cfg.method.name, disable=not show, file=sys.stderr)
    with stop.deferred():  # in the loop, SIGINT/SIGTERM wait for the end of the step, then checkpoint and stop
        while s["step"] < total_steps:
            if s["position"] == 0:  # a new epoch; else a resumed one, whose generator state is restored above
                s["epoch"] += 1
                s["epoch_rng"] = generator.get_state()
            for index, indices in enumerate(batches):
                if index < s["position"]:
                    continue  # consumed before the interruption
                global_rows = len(indices)
                mine, weight = indices, 1.0
                if dist.enabled:
                    mine = indices[dist.rank :: dist.world]
                    if not mine:  # fewer rows than ranks: a zero-weight row keeps this rank in the gradient sync
                        mine, weight = indices[:1], 0.0
                batch = collate([train_set[i] for i in mine])
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                net.train()
                with autocast(amp, device):
                    logits = net(batch["input_ids"], batch["attention_mask"])
                if dist.enabled:
                    loss_sum = F.cross_entropy(logits.float(), batch["labels"], reduction="sum") * weight
                    loss = loss_sum * (dist.world / global_rows)  # DDP averages: world * mean-share / world
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    mask = batch["attention_mask"]
                    totals = dist.sum(
                        [loss_sum.item(), weight * float(mask.sum()), weight * mask.numel(), float(stop.requested)]
                    )
                    step_loss, real_tokens, padded_tokens = totals[0] / global_rows, int(totals[1]), int(totals[2])
                    agreed = agree_to_stop(totals[3] > 0)  # a signal after this sum stops the next step
                    check_finite(step_loss, s["step"] + 1, cfg)
                else:
                    loss = F.cross_entropy(logits.float(), batch["labels"])
                    step_loss = loss.item()
                    check_finite(step_loss, s["step"] + 1, cfg)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    real_tokens = int(batch["attention_mask"].sum())
                    padded_tokens = batch["attention_mask"].numel()
                if t.grad_clip:
                    torch.nn.utils.clip_grad_norm_(trainable, t.grad_clip)
                optimizer.step()
                scheduler.step()
                s["step"] += 1
                s["position"] = index + 1
                s["samples"] += global_rows
                s["real_tokens"] += real_tokens
                s["padded_tokens"] += padded_tokens
                s["window_loss"] += step_loss
                s["window_steps"] += 1
                window_samples += global_rows
                bar.update(1)
                step = s["step"]
                if step % t.log_every == 0 or step == total_steps:
                    speed = window_samples / max(time.perf_counter() - window_start, 1e-9)
                    mean_loss = s["window_loss"] / s["window_steps"]
                    tracker.log_metrics(
                        {
                            "train/loss": mean_loss,
                            "train/lr": scheduler.get_last_lr()[0],
                            "train/samples_per_s": speed,
                            "train/epoch": s["epoch"],
                        },
                        step,
                    )
                    bar.set_postfix(loss=f"{mean_loss:.4f}", samples_per_s=f"{speed:.1f}")
                    s["window_loss"], s["window_steps"], window_samples = 0.0, 0, 0
                    window_start = time.perf_counter()
                if t.eval_every and step % t.eval_every == 0 and step < total_steps:
                    run_eval(step)
                    window_start = time.perf_counter()
                stopping = agreed if dist.enabled else stop.requested
                if stopping or (t.checkpoint_every and step % t.checkpoint_every == 0):
                    checkpoint()
                if stopping:
                    stop.check()
                if step >= total_steps:
                    break
            s["position"], s["epoch_rng"] = 0, generator.get_state()  # the next epoch starts from here
            if not t.eval_every and s["step"] < total_steps:
                run_eval(s["step"])
            checkpoint()  # at every epoch end, the last one included (a kill in the final eval resumes there)
            if agree_to_stop(bool(dist.sum([float(stop.requested)])[0])):
                stop.check()
    train_seconds = s["elapsed_s"] + time.perf_counter() - clock - s["eval_s"]
    metrics = run_eval(s["step"])
    bar.close()
    summary = {
        "time/train_s": train_seconds,
        "time/eval_s": s["eval_s"],
        "throughput/train_samples_per_s": s["samples"] / max(train_seconds, 1e-9),
        "memory/peak_mb": dist.max(peak_memory_mb(device)),  # the largest of the ranks'
        "train/steps": s["step"],
        "train/epochs": s["epoch"],
        "train/real_token_fraction": s["real_tokens"] / max(s["padded_tokens"], 1),  # non-pad share of batch tokens
    }
    tracker.log_metrics(summary, s["step"])
    return {**metrics, "eval/best_accuracy": s["best"], **summary}


__all__ = ["Interrupted", "TrainingDiverged", "run_experiment"]

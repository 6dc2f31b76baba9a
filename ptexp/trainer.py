"""The trainer: one experiment from its config to its result. It picks up a run to resume, sets torch up, builds
the model and data (:mod:`ptexp.experiment`), trains them (:mod:`ptexp.loop`) inside the run's tracking, saves the
adapter and the final predictions (:mod:`ptexp.predictions`); a failure marks the run and names how to resume."""

from __future__ import annotations

import contextlib
import platform
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from omegaconf import DictConfig, OmegaConf

from ptexp.adapters import adapter_bytes, save_adapter
from ptexp.checkpoint import (
    CKPT,
    check_resumable,
    load_checkpoint,
    read_result,
    resume_target,
    resumed_config,
    rewind_metrics,
    write_result,
)
from ptexp.data import Collator, Dataset, EncodedSplit, encode
from ptexp.devices import autocast_dtype, fused_optimizer, pick_device, reset_peak_memory, use_tf32, wants_fast_dropout
from ptexp.distributed import Dist, distributed, share_run_dir, torchrun_world
from ptexp.errors import UserError
from ptexp.evaluation import EvalSets, TaskSpec
from ptexp.experiment import Experiment, build_experiment, prepare_config, set_up_training, use_method_epochs
from ptexp.fast_dropout import use_fast_dropout
from ptexp.inference import log_inference_cost
from ptexp.loop import TrainJob, train
from ptexp.methods import Training, export_adapter, run_variant
from ptexp.metrics import load_backends
from ptexp.models import count_parameters
from ptexp.predictions import save_predictions
from ptexp.signals import StopSignals
from ptexp.tracking import NullTracker, RunTracker, config_params


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
        start = where_to_start(cfg, run_dir, overrides, in_sweep, dist)
        if start.done is not None:
            return start.done
        return run_tracked(start, in_sweep, dist)


@dataclass
class Start:
    """Where a run starts: its config, folder and original overrides, and the checkpoint it goes on from (or, for a
    run that finished already, its result)."""

    cfg: DictConfig
    run_dir: Path
    overrides: list[str] = field(default_factory=list)
    state: dict | None = None
    done: dict[str, float] | None = None


def where_to_start(cfg: DictConfig, run_dir: Path, overrides: list[str] | None, in_sweep: bool, dist: Dist) -> Start:
    """A new run in ``run_dir``, or the run ``trainer.resume`` names, with its own config and overrides."""
    target = dist.decide(lambda: resume_target(cfg, run_dir, in_sweep))
    if target is None:
        return Start(cfg, run_dir, list(overrides or []))
    done = read_result(target)
    if done is not None:
        if dist.main:
            print(f"[ptexp] {target} already finished; nothing to resume", flush=True)
        return Start(cfg, target, done=done)
    state = load_checkpoint(target)  # every rank reads the same file
    cfg = resumed_config(cfg, state["meta"]["config"], overrides)
    if dist.main:
        rewind_metrics(target, state)
    overrides = state["meta"].get("overrides", overrides)  # the original command's, for the adapter
    prepare_config(cfg)
    return Start(cfg, target, list(overrides or []), state)


def set_up_torch(cfg: DictConfig, dist: Dist) -> tuple[torch.device, torch.dtype | None, bool]:
    """Threads, seed and determinism; returns (device, autocast dtype or None, whether TF32 matmuls are on)."""
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
    return device, amp, tf32


def run_tracked(start: Start, in_sweep: bool, dist: Dist) -> dict[str, float]:
    """Build, train and save the adapter inside the run's tracking; the run FINISHED, or marked by its failure."""
    cfg, run_dir, state = start.cfg, start.run_dir, start.state
    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
    device, amp, tf32 = set_up_torch(cfg, dist)
    load_backends()  # held by every run of a sweep from its start (see load_backends)
    reset_peak_memory(device)  # memory/peak_mb: this run's peak, not the largest of a sweep's runs so far
    with StopSignals() as stop:
        # Rank 0 connects first: an unreachable store fails every rank before any work.
        trackers: list = []
        dist.decide(lambda: trackers.append(RunTracker(cfg, run_dir)))
        tracker = trackers[0] if trackers else NullTracker(run_dir)
        built, train_set, evals, training = build(cfg, device, state, run_dir)
        total, trainable = count_parameters(built.model)
        counts = {"params/total": total, "params/trainable": trainable, "params/trainable_pct": 100 * trainable / total}
        tags = run_tags(cfg, built.dataset, device, amp, tf32, dist, state)
        tracker.start(run_name(cfg), config_params(cfg), tags, resume=state is not None)
        with marking_failures(tracker, run_dir, dist, in_sweep):
            announce(cfg, tracker, run_dir, dist, state, counts, train_set, evals)
            meta = {
                "config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
                "fingerprint": built.base_fingerprint,
                "overrides": start.overrides,
            }
            collate = Collator(built.tokenizer.pad_token_id)
            where = {"run_dir": run_dir, "resume": state, "stop": stop, "meta": meta, "dist": dist}
            job = TrainJob(
                cfg, tracker, device, collate, amp=amp, spec=TaskSpec.of(cfg.data), training=training, **where
            )
            result = train(built.model, train_set, evals, job)
            result |= log_inference_cost(built.model, evals.eval, job, result["train/steps"])
            if dist.main:
                save_predictions(job.predictions, job.spec.task, run_dir, tracker)
                save_and_log_adapter(built, cfg, run_dir, start.overrides, tracker, result)
        result = {**counts, **result}
        if dist.main:
            write_result(run_dir, result, cfg.trainer.keep_checkpoint)
        tracker.finish("FINISHED")
    return result


@contextlib.contextmanager
def marking_failures(tracker: RunTracker | NullTracker, run_dir: Path, dist: Dist, in_sweep: bool) -> Iterator[None]:
    """An error inside marks the run FAILED (KILLED for SIGINT/SIGTERM) with the error as the tag ``ptexp.error``,
    names the command that resumes an interrupted run, and goes on up."""
    try:
        yield
    except BaseException as err:
        tracker.set_tag("ptexp.error", f"{type(err).__name__}: {err}"[:5000])
        tracker.finish("KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        if isinstance(err, KeyboardInterrupt) and dist.main and (run_dir / CKPT).is_file():
            again = resume_command(run_dir, dist, in_sweep)
            print(f"[ptexp] checkpoint saved in {run_dir}; go on with: {again}", file=sys.stderr, flush=True)
        raise


def build(
    cfg: DictConfig, device: torch.device, state: dict | None, run_dir: Path
) -> tuple[Experiment, EncodedSplit, EvalSets, Training]:
    """The experiment (checked against the checkpoint it resumes), its tokenised train rows and eval sets, and the
    method's part in the loop."""
    built = build_experiment(cfg, device)
    training = set_up_training(cfg, built)
    if wants_fast_dropout(cfg.trainer.fast_dropout, device):
        use_fast_dropout(built.model)
    if state is not None:
        check_resumable(state, built.model, built.base_fingerprint, run_dir)
    token_cache = Path(cfg.output_root).resolve() / "cache" / "tokens"  # shared by every job of a sweep
    data = built.dataset

    def tokenised(split):
        return encode(split, built.tokenizer, cfg.data.max_length, token_cache)

    selection = None if data.selection is None else tokenised(data.selection)
    evals = EvalSets(tokenised(data.eval), {name: tokenised(s) for name, s in data.extra_evals.items()}, selection)
    return built, tokenised(data.train), evals, training


def announce(
    cfg: DictConfig,
    tracker: RunTracker | NullTracker,
    run_dir: Path,
    dist: Dist,
    state: dict | None,
    counts: dict[str, float],
    train_set: EncodedSplit,
    evals: EvalSets,
) -> None:
    """A new run logs its sizes and Hydra's config files; every run prints what trains (rank 0 alone)."""
    say = print if dist.main else (lambda *args, **kwargs: None)
    if state is None:
        rows = {"data/train_rows": len(train_set), "data/eval_rows": len(evals.eval)}
        if evals.selection is not None:
            rows["data/selection_rows"] = len(evals.selection)
        tracker.log_metrics({**counts, **rows}, 0)
        for artifact in ("config.yaml", "overrides.yaml"):
            if (run_dir / ".hydra" / artifact).exists():
                tracker.log_artifact(run_dir / ".hydra" / artifact)
    else:
        say(f"[ptexp] resuming {run_dir} at step {state['loop']['step']}", flush=True)
    processes = f" on {dist.world} processes ({dist.backend})" if dist.enabled else ""
    selection = f" / {len(evals.selection)} selection rows" if evals.selection is not None else ""
    total, trainable, pct = counts["params/total"], counts["params/trainable"], counts["params/trainable_pct"]
    say(
        f"[ptexp] {run_name(cfg)}: {trainable:,} of {total:,} parameters train ({pct:.3f}%); "
        f"{len(train_set)} train / {len(evals.eval)} eval rows{selection}{processes}; {tracker.url_hint}",
        flush=True,
    )


def save_and_log_adapter(
    built: Experiment,
    cfg: DictConfig,
    run_dir: Path,
    overrides: list[str],
    tracker: RunTracker | NullTracker,
    result: dict[str, float],
) -> None:
    """Save what trained to ``run_dir/adapter`` and log it, its size (``adapter/bytes``, also added to ``result``)
    and ``metrics.jsonl``."""
    exported = export_adapter(cfg, built.model)
    folder = save_adapter(
        exported, cfg, run_dir / "adapter", built.base_fingerprint, overrides, built.dataset.label_names, result
    )
    result["adapter/bytes"] = adapter_bytes(folder)
    tracker.log_metrics({"adapter/bytes": result["adapter/bytes"]}, result["train/steps"])
    tracker.log_artifacts(folder, "adapter")
    tracker.log_artifact(tracker.metrics_file)


def run_name(cfg: DictConfig) -> str:
    """``tracking.run_name``, else ``METHOD[-VARIANT]-MODEL-DATA-s<seed>``, the variant as the method names it:
    ``prefix-P20-...``, ``lora-r8-...``."""
    seed = f"s{cfg.seed}"
    variant = "".join(f"-{label}{text}" for label, text in run_variant(cfg))
    return cfg.tracking.run_name or f"{cfg.method.name}{variant}-{cfg.model.name}-{cfg.data.name}-{seed}"


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
        "ptexp.task": str(getattr(cfg.data.task, "value", cfg.data.task)),
        "ptexp.primary_metric": TaskSpec.of(cfg.data).primary,
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
        **cfg.tracking.tags,
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

"""Checkpoints for exact resume (stopping on SIGINT / SIGTERM: :mod:`ptexp.signals`).

A checkpoint holds only what changes while training: the parameters that train (``requires_grad``), the
optimizer and scheduler states, the method's own training state (:meth:`~ptexp.methods.base.Training.state_dict`),
the torch / CUDA / Python RNG states, the data-order generator's state at the start of the current epoch with the
number of batches already taken from it, the loop's counters, and the MLflow run id. The frozen rest is rebuilt from
the config and the seed, and checked against the backbone fingerprint.
It is written to ``ckpt.tmp``, synced, then renamed over ``ckpt.pt``, so a kill mid-write leaves the previous
checkpoint intact. A run that finishes writes ``result.json`` and drops its checkpoint (unless
``trainer.keep_checkpoint``).

``trainer.resume`` picks the run to continue:

- ``false``: start afresh;
- ``true``: this job's own run folder when it holds a checkpoint (a sweep re-run with the same
  ``hydra.sweep.dir``, or ``hydra.run.dir`` set), else, for a single run, the newest unfinished run folder with
  a checkpoint under ``output_root`` (``runs/*/*/`` and ``multiruns/*/*/*/``);
- a run folder (the one with ``ckpt.pt``), or an MLflow run id (its ``ptexp.run_dir`` tag names the folder).
"""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf, open_dict

from ptexp.errors import UserError
from ptexp.store import flatten, run_dir_of

if TYPE_CHECKING:
    from torch import nn

    from ptexp.methods.base import Training
# torch is imported inside the functions that need it: the CLI checks trainer.resume before loading torch.

CKPT, TMP, RESULT = "ckpt.pt", "ckpt.tmp", "result.json"
VERSION = 1
RUN_ID = re.compile(r"^[0-9a-f]{32}$")
# Keys a resumed run may change: they do not alter what is computed (or, for tracking, only where it is logged).
RUNTIME_KEYS = (
    "trainer.resume",
    "trainer.progress",
    "trainer.device",
    "trainer.threads",
    "trainer.dist_timeout_s",
    "trainer.checkpoint_every",
    "trainer.keep_checkpoint",
    "tracking.",
    "output_root",
)


# ---------------------------------------------------------------------------------------------------------------
# Writing and reading


def rng_states() -> dict[str, Any]:
    import torch

    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
    }


def set_rng_states(states: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    random.setstate(states["python"])


def save_checkpoint(
    run_dir: Path,
    model: nn.Module,
    optimizer,
    scheduler,
    loop: dict,
    meta: dict,
    rng_ranks: list | None = None,
    method: dict | None = None,
) -> Path:
    """Write the training state atomically (``ckpt.tmp`` -> fsync -> rename to ``ckpt.pt``). Under torchrun,
    ``rng_ranks`` holds every rank's RNG states (rank 0 writes the checkpoint for all); ``method``: the method's
    :meth:`~ptexp.methods.base.Training.state_dict`."""
    import torch

    state = {
        "version": VERSION,
        "trainable": trainable_tensors(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "method": method or {},
        "rng": rng_states(),
        "loop": loop,
        "meta": meta,
    }
    if rng_ranks is not None:
        state["rng_ranks"] = rng_ranks
    tmp, final = run_dir / TMP, run_dir / CKPT
    with tmp.open("wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    _fsync_dir(run_dir)
    return final


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(run_dir: Path) -> dict:
    import torch

    path = run_dir / CKPT
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(
            f"trainer.resume: {path} is not a readable checkpoint ({type(err).__name__}); valid: a run folder "
            "whose ckpt.pt was written by ptexp"
        ) from None
    if not isinstance(state, dict) or state.get("version") != VERSION:
        raise UserError(f"trainer.resume: {path} is not a ptexp checkpoint of version {VERSION}")
    return state


def check_resumable(state: dict, model: nn.Module, fingerprint: str, run_dir: Path) -> None:
    """The rebuilt model must be the one the checkpoint trained: same base weights, same trained tensors."""
    if state["meta"]["fingerprint"] != fingerprint:
        raise UserError(
            f"trainer.resume: the base model rebuilt now differs from the one {run_dir} was trained on; valid: "
            "the same model.name_or_path (and weights) as the original run"
        )
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    if names != set(state["trainable"]):
        raise UserError(
            f"trainer.resume: the tensors that train now differ from {run_dir}'s checkpoint; valid: the run's "
            "method and model options"
        )


def trainable_tensors(model: nn.Module) -> dict:
    """A CPU copy of the parameters that train (``requires_grad``), by name."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def put_trainable(model: nn.Module, tensors: dict) -> None:
    """Copy ``tensors`` (from :func:`trainable_tensors`) back into the parameters of those names."""
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in tensors.items():
            params[name].copy_(tensor)


def restore(state: dict, model: nn.Module, optimizer, scheduler, training: Training) -> dict:
    """Put the saved weights, optimizer, scheduler and method states back; returns the loop state. RNG states are
    set apart, by :func:`set_rng_states`, right before the loop starts."""
    put_trainable(model, state["trainable"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    training.load_state_dict(state.get("method", {}))
    return state["loop"]


def rewind_metrics(run_dir: Path, state: dict) -> None:
    """Cut ``metrics.jsonl`` back to what it held at the checkpoint: the steps after it run again (after a hard
    kill; SIGINT/SIGTERM checkpoint at the step they stop at), and the file keeps one row per step."""
    path, size = run_dir / "metrics.jsonl", state["loop"].get("metrics_bytes")
    if size is not None and path.is_file() and path.stat().st_size > size:
        os.truncate(path, size)


def write_result(run_dir: Path, result: dict[str, float], keep_checkpoint: bool) -> None:
    """Mark the run folder finished (``result.json``) and drop its checkpoint."""
    tmp = run_dir / (RESULT + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, run_dir / RESULT)
    if not keep_checkpoint:
        (run_dir / CKPT).unlink(missing_ok=True)


def read_result(run_dir: Path) -> dict[str, float] | None:
    path = run_dir / RESULT
    return json.loads(path.read_text()) if path.is_file() else None


# ---------------------------------------------------------------------------------------------------------------
# Which run to resume


def resume_target(cfg: DictConfig, own_dir: Path, in_sweep: bool) -> Path | None:
    """The run folder that ``trainer.resume`` asks for (None: start afresh); UserError when there is none."""
    value = cfg.trainer.resume
    if value is None or value is False or str(value).lower() in ("false", ""):
        return None
    if value is True or str(value).lower() == "true":
        if (own_dir / CKPT).is_file() or (own_dir / RESULT).is_file():
            return own_dir
        if in_sweep:
            return None  # this job of the sweep never wrote a checkpoint: it starts afresh
        root = Path(cfg.output_root).expanduser().resolve()
        found = [
            p.parent
            for pattern in (f"runs/*/*/{CKPT}", f"multiruns/*/*/*/{CKPT}")
            for p in root.glob(pattern)
            if not (p.parent / RESULT).is_file()
        ]
        if not found:
            raise UserError(
                f"trainer.resume: no run folder with a checkpoint ({CKPT}) under {root}; valid: false, a run "
                "folder, an MLflow run id, or output_root=DIR where the run was written"
            )
        return max(found, key=lambda d: (d / CKPT).stat().st_mtime)
    text = str(value)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / CKPT).is_file() and not (path / RESULT).is_file():
            raise UserError(
                f"trainer.resume: {path.resolve()} holds no checkpoint ({CKPT}); valid: a run folder written with "
                "trainer.checkpoint_every or interrupted by SIGINT/SIGTERM, true, or an MLflow run id"
            )
        return path.resolve()
    if RUN_ID.match(text):
        return resume_target_from_dir(run_dir_of(cfg, text), text)
    raise UserError(
        f"trainer.resume: {text!r} is neither a folder nor an MLflow run id; valid: false, true, a run folder, "
        "or a 32-hex-digit MLflow run id"
    )


def resume_target_from_dir(path: Path, run_id: str) -> Path:
    if not (path / CKPT).is_file() and not (path / RESULT).is_file():
        raise UserError(
            f"trainer.resume: MLflow run {run_id} was written to {path}, which holds no checkpoint ({CKPT}); "
            "valid: a run that was interrupted or checkpointed"
        )
    return path


def resumed_config(cfg: DictConfig, saved: dict, overrides: list[str] | None) -> DictConfig:
    """The run's own config, with the runtime keys (``RUNTIME_KEYS``) this command line sets explicitly; even
    ``trainer.resume`` keeps the run's value, so that the adapter records the config of the original command.
    An explicit override of any other key must agree with the run's value: a resumed run must compute what the
    original would."""
    now = flatten(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    before = flatten(saved)
    explicit = [o.lstrip("+~").split("=", 1)[0] for o in overrides or [] if "=" in o]
    for key in sorted(set(now) | set(before)):
        if key.startswith(RUNTIME_KEYS) or now.get(key) == before.get(key):
            continue
        if _named(key, explicit):
            raise UserError(
                f"{key}: the run being resumed used {before.get(key)!r}, not {now.get(key)!r}; valid: the run's "
                "value or no override (a resumed run keeps its config), or trainer.resume=false for a new run"
            )
    merged = OmegaConf.merge(cfg, saved)  # the run's values, typed by the schema
    with open_dict(merged):
        for key in now:
            if key != "trainer.resume" and key.startswith(RUNTIME_KEYS) and _named(key, explicit):
                OmegaConf.update(merged, key, OmegaConf.select(cfg, key), merge=False)
    return merged


def _named(key: str, explicit: list[str]) -> bool:
    return any(key == e or key.startswith(e + ".") for e in explicit)

"""Adapters: save only what a method trained (safetensors + a small JSON), and load it back onto a rebuilt model.

A method's ``export`` hook may save other tensors than those that trained (a projected prefix is saved as the plain
prefix it produces) with the config keys that rebuild a model to take them (``rebuild``). The JSON records the
method, the base model, a fingerprint of the base weights, the command-line overrides that composed the run, the
eval metrics the run ended with, and what the method adds (``method_info``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ptexp.errors import UserError
from ptexp.metrics import metric_names

WEIGHTS, META = "adapter.safetensors", "adapter.json"
REQUIRED = ("method", "base_model", "overrides", "label_names")  # what evaluate reads
BASE_KEYS = ("name", "name_or_path", "fingerprint")


@dataclass
class Exported:
    """What an adapter holds: its tensors, the config keys ``ptexp.evaluate`` sets before it rebuilds the model
    (e.g. ``{"prefix.projection": False}`` for a collapsed prefix), and facts the method adds to adapter.json."""

    tensors: dict[str, torch.Tensor]
    rebuild: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def backbone_fingerprint(backbone: nn.Module) -> str:
    """sha256 over the backbone's tensors (names, shapes, bytes): the same base weights, the same print."""
    digest = hashlib.sha256()
    for name, tensor in sorted(backbone.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def trained_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """{name: CPU tensor} of every parameter that trained (``requires_grad``)."""
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def save_adapter(
    exported: Exported,
    cfg: DictConfig,
    folder: Path,
    base_fingerprint: str,
    overrides: list[str],
    label_names: list[str],
    metrics: dict[str, float],
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tensors = exported.tensors
    save_file(tensors, str(folder / WEIGHTS))
    meta = {
        "method": cfg.method.name,
        "base_model": {"name": cfg.model.name, "name_or_path": cfg.model.name_or_path, "fingerprint": base_fingerprint},
        "rebuild": exported.rebuild,
        "overrides": overrides,
        "label_names": list(label_names),
        "task": str(getattr(cfg.data.task, "value", cfg.data.task)),
        "primary_metric": metric_names(cfg.data)[1],
        "trained_parameters": sum(t.numel() for t in tensors.values()),
        "eval": {k: v for k, v in metrics.items() if k.startswith(("eval/", "eval_", "selection/"))},
        "method_info": exported.info,
        "config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
    }
    (folder / META).write_text(json.dumps(meta, indent=2))
    shutil.copymode(folder / META, folder / WEIGHTS)  # safetensors writes 0600; the JSON's mode follows the umask
    return folder


def adapter_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in (folder / WEIGHTS, folder / META))


def read_adapter(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(adapter.json's record, the saved tensors); a UserError names the file that is missing, corrupt or incomplete."""
    meta_path, weights_path = folder / META, folder / WEIGHTS
    if not meta_path.is_file() or not weights_path.is_file():
        raise UserError(f"ADAPTER_DIR: {folder} holds no {META} and {WEIGHTS}; valid: a run's adapter/ folder")
    try:
        meta = json.loads(meta_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"ADAPTER_DIR: {meta_path} is not JSON ({err}); valid: the {META} a run wrote") from None
    record = meta if isinstance(meta, dict) else {}
    base = record.get("base_model") if isinstance(record.get("base_model"), dict) else {}
    missing = [key for key in REQUIRED if key not in record]
    missing += [f"base_model.{key}" for key in BASE_KEYS if "base_model" in record and key not in base]
    if missing:
        raise UserError(f"ADAPTER_DIR: {meta_path} lacks {', '.join(missing)}; valid: the {META} a run wrote")
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError) as err:
        problem = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(
            f"ADAPTER_DIR: {weights_path} cannot be read ({problem}); valid: the {WEIGHTS} a run wrote"
        ) from None
    return meta, tensors


def load_trained(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Put the saved tensors into ``model``; every saved name must exist there with the same shape."""
    params = dict(model.named_parameters())
    for name, tensor in tensors.items():
        if name not in params or params[name].shape != tensor.shape:
            found = tuple(params[name].shape) if name in params else "missing"
            raise UserError(
                f"ADAPTER_DIR: saved tensor {name} {tuple(tensor.shape)} does not fit the rebuilt model ({found}); "
                "valid: the same model and method options the adapter was trained with"
            )
        with torch.no_grad():
            params[name].copy_(tensor)

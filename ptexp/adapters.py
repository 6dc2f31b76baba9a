"""Adapters: save only what a method trained (safetensors + a small JSON), and load it back onto a rebuilt model.

A projected prefix is collapsed to the plain (layers, 2, P, hidden) prefix it produces, so inference
needs no MLP. The JSON records the method, the base model, a fingerprint of the base weights, the
command-line overrides that composed the run, and the eval metrics the run ended with.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ptexp.errors import UserError
from ptexp.metrics import metric_names

WEIGHTS, META = "adapter.safetensors", "adapter.json"
REQUIRED = ("method", "base_model", "prefix_projection_collapsed", "overrides", "label_names")  # what evaluate reads
BASE_KEYS = ("name", "name_or_path", "fingerprint")
PROJECTED_PREFIX = "prefix_encoder."


def backbone_fingerprint(backbone: nn.Module) -> str:
    """sha256 over the backbone's tensors (names, shapes, bytes): the same base weights, the same print."""
    digest = hashlib.sha256()
    for name, tensor in sorted(backbone.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def trained_tensors(model: nn.Module) -> tuple[dict[str, torch.Tensor], bool]:
    """({name: tensor} of every trained parameter, whether a projected prefix was collapsed)."""
    tensors = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}
    encoder = getattr(model, "prefix_encoder", None)
    collapsed = bool(encoder is not None and encoder.projection)
    if collapsed:
        tensors = {k: v for k, v in tensors.items() if not k.startswith(PROJECTED_PREFIX)}
        with torch.no_grad():
            tensors[f"{PROJECTED_PREFIX}prefix"] = encoder.key_values().detach().cpu().contiguous()
    return tensors, collapsed


def save_adapter(
    model: nn.Module,
    cfg: DictConfig,
    folder: Path,
    base_fingerprint: str,
    overrides: list[str],
    label_names: list[str],
    metrics: dict[str, float],
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tensors, collapsed = trained_tensors(model)
    save_file(tensors, str(folder / WEIGHTS))
    meta = {
        "method": cfg.method.name,
        "base_model": {"name": cfg.model.name, "name_or_path": cfg.model.name_or_path, "fingerprint": base_fingerprint},
        "prefix_projection_collapsed": collapsed,
        "overrides": overrides,
        "label_names": list(label_names),
        "task": str(getattr(cfg.data.task, "value", cfg.data.task)),
        "primary_metric": metric_names(cfg.data)[1],
        "trained_parameters": sum(t.numel() for t in tensors.values()),
        "eval": {k: v for k, v in metrics.items() if k.startswith(("eval/", "eval_", "selection/"))},
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

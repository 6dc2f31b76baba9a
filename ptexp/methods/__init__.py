"""The method registry: each ``conf/method/NAME.yaml`` has its module ``ptexp/methods/NAME.py``, which exports a
``METHOD`` spec (see :mod:`ptexp.methods.base`); a new method is that module and that YAML file.

Importing this package registers the config schema: ptexp's own sections plus each method's options section, so
the typo and type checks cover every method's keys with no list to keep. The method modules import no torch, so
the command line does this before its cheap checks.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from ptexp import config
from ptexp.methods.base import MethodSpec, Training, check_position_budget, variant_of

if TYPE_CHECKING:
    from torch import nn

    from ptexp.adapters import Exported
    from ptexp.models import SequenceClassifier


def discover() -> dict[str, MethodSpec]:
    """Name -> spec of every method with a YAML file under conf/method/, in name order."""
    modules = [f"ptexp.methods.{path.stem}" for path in sorted((config.CONF_DIR / "method").glob("*.yaml"))]
    specs = [importlib.import_module(module).METHOD for module in modules]
    return {spec.name: spec for spec in specs}


def option_sections(specs: dict[str, MethodSpec]) -> dict[str, type]:
    """Section -> options dataclass; methods may share a section (peft_prefix reads prefix's), not differ on it."""
    sections: dict[str, type] = {}
    for spec in specs.values():
        if spec.options is not None and sections.setdefault(spec.section, spec.options) is not spec.options:
            raise TypeError(f"method {spec.name}: section {spec.section} has another options class already")
    return sections


METHODS: dict[str, MethodSpec] = discover()
SECTIONS: dict[str, type] = option_sections(METHODS)
Schema = config.with_sections(SECTIONS, __name__)
config.register_configs(Schema)


def build_model(cfg: DictConfig, classifier: SequenceClassifier) -> nn.Module:
    """Wrap ``classifier`` for ``cfg.method.name``."""
    return METHODS[cfg.method.name].build(cfg, classifier)


def export_adapter(cfg: DictConfig, model: nn.Module) -> Exported:
    """What the adapter of ``model`` (trained by ``cfg.method.name``) holds: its export of the trained tensors."""
    from ptexp.adapters import Exported, trained_tensors

    spec, tensors = METHODS[cfg.method.name], trained_tensors(model)
    return spec.export(model, tensors) if spec.export is not None else Exported(tensors)


def start_training(cfg: DictConfig, model: nn.Module, total_steps: int) -> Training:
    """The method's part in a training loop of ``total_steps`` steps; its checks against that count raise
    UserError."""
    spec = METHODS[cfg.method.name]
    return spec.training(model, spec.options_of(cfg), total_steps) if spec.training is not None else Training()


def run_variant(cfg: DictConfig) -> tuple[tuple[str, str], ...]:
    """(label, value) pairs naming the variant ``cfg`` runs, e.g. (("r", "8"),) for LoRA's rank."""
    spec = METHODS.get(cfg.method.name)
    return () if spec is None else variant_of(spec.variant, lambda key: OmegaConf.select(cfg, key))


__all__ = [
    "METHODS",
    "SECTIONS",
    "MethodSpec",
    "Schema",
    "Training",
    "build_model",
    "check_position_budget",
    "export_adapter",
    "run_variant",
    "start_training",
]

"""``python -m ptexp.evaluate ADAPTER_DIR [overrides ...]``: rebuild base model + adapter and evaluate it.

The run's own command-line overrides are replayed (from adapter.json) before yours, so with no extra
overrides the same data gives the run's eval metrics exactly. Pass e.g. ``data=sst2
data.data_dir=DIR`` to evaluate on other data; a base model whose weights differ from the one the
adapter was trained on is refused.

The predictions for every eval row go to ``--predictions FILE`` (JSON lines, as a run's
``predictions/eval.jsonl``: :mod:`ptexp.predictions`); by default to ``predictions/evaluate_<data.name>.jsonl``
in the run folder that holds ADAPTER_DIR, beside the run's own ``predictions/eval.jsonl``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf, open_dict

import ptexp.methods  # noqa: F401  (registers the schema, every method's options included)
from ptexp.adapters import load_trained, read_adapter
from ptexp.config import CONF_DIR
from ptexp.data import Collator, encode
from ptexp.devices import autocast_dtype, pick_device
from ptexp.errors import OneLineParser, UserError
from ptexp.evaluation import TaskSpec, describe, predict
from ptexp.experiment import build_experiment, prepare_config
from ptexp.predictions import FOLDER, write_predictions


def evaluate_adapter(folder: Path, overrides: list[str], predictions: Path | None = None) -> dict[str, float]:
    """The adapter in ``folder`` on the data ``overrides`` name: its eval metrics, with ``rows``, ``primary``, the
    log ``line`` and ``predictions``, the file its per-row predictions went to (default: see the module)."""
    meta, tensors = read_adapter(folder)
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=[*meta["overrides"], *overrides])
    except HydraException as err:
        raise UserError(f"overrides: {err}".splitlines()[0]) from None
    if cfg.method.name != meta["method"]:
        raise UserError(f"method: the adapter is for method={meta['method']}, not {cfg.method.name}")
    prepare_config(cfg)
    with open_dict(cfg):
        for key, value in meta.get("rebuild", {}).items():  # what the method's export asks for, e.g. no projection
            OmegaConf.update(cfg, key, value)
    device = pick_device(cfg.trainer.device)
    built = build_experiment(cfg, device)
    base = meta["base_model"]
    if built.base_fingerprint != base["fingerprint"]:
        raise UserError(
            f"model: the adapter was trained on {base['name']} ({base['name_or_path']}), but "
            f"model={cfg.model.name} ({cfg.model.name_or_path}) has other weights; valid: the adapter's base model"
        )
    if list(built.dataset.label_names) != meta["label_names"]:
        raise UserError(
            f"data.label_names: {list(built.dataset.label_names)} differ from the adapter's {meta['label_names']}"
        )
    load_trained(built.model, {k: v.to(device) for k, v in tensors.items()})
    eval_set = encode(built.dataset.eval, built.tokenizer, cfg.data.max_length)
    collate = Collator(built.tokenizer.pad_token_id)
    amp = autocast_dtype(cfg.trainer.precision, device)  # the precision the run evaluated in, for the same numbers
    spec = TaskSpec.of(cfg.data)
    outputs = predict(built.model, eval_set, cfg.trainer.eval_batch_size, collate, device, amp=amp, spec=spec)
    metrics = outputs.metrics(spec, "eval")
    path = predictions or folder.parent / FOLDER / f"evaluate_{cfg.data.name}.jsonl"
    try:
        write_predictions(path, outputs, spec.task)
    except OSError as err:
        problem = f"cannot write {path} ({err.strerror})"
        raise UserError(f"--predictions: {problem}; valid: a file that can be written") from None
    extra = {"rows": len(eval_set), "primary": spec.primary, "line": describe(metrics, "eval", spec)}
    return metrics | extra | {"predictions": str(path)}


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(prog="python -m ptexp.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("adapter_dir", type=Path, help="a run's adapter/ folder")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data=sst2 data.data_dir=DIR")
    parser.add_argument(
        "--predictions",
        type=Path,
        metavar="FILE",
        help="where the per-row predictions go (JSON lines; default: "
        "predictions/evaluate_<data.name>.jsonl in the run folder that holds ADAPTER_DIR)",
    )
    args = parser.parse_args(argv)
    try:
        metrics = evaluate_adapter(args.adapter_dir.resolve(), args.overrides, args.predictions)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    primary = metrics["primary"]
    print(f"eval {primary} {metrics[f'eval/{primary}']:.4f} (primary)  {metrics['line']}  ({metrics['rows']} rows)")
    print(f"predictions: {metrics['predictions']}")


if __name__ == "__main__":
    main()

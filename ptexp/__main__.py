"""Command line: ``python -m ptexp [group=option ...] [key=value ...]`` (Hydra; ``-m`` for sweeps)."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ptexp import config as _config  # noqa: F401  (registers the structured config schemas)
from ptexp.config import UserError
from ptexp.trainer import TrainingDiverged, run_experiment, tracking_uri

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def check_group_choices(argv: list[str]) -> None:
    """Exit with one short line for ``group=option`` arguments that name no option (before Hydra's longer one)."""
    groups = {d.name: sorted(f.stem for f in d.glob("*.yaml")) for d in CONF_DIR.iterdir() if d.is_dir()}
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        if not sep or key not in groups or "(" in value or value in ("null", ""):
            continue
        for option in value.split(","):
            if option not in groups[key]:
                print(f"error: {key}={option}: no such option; valid: {', '.join(groups[key])}", file=sys.stderr)
                sys.exit(2)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Run one experiment; returns the final eval accuracy (what sweepers optimise)."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        result = run_experiment(cfg, run_dir, list(HydraConfig.get().overrides.task))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except TrainingDiverged as err:
        print(f"error: training diverged: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted: the run is marked KILLED", file=sys.stderr)
        sys.exit(130)
    accuracy = result["eval/accuracy"]
    print(
        f"[ptexp] done: eval accuracy {accuracy:.4f}, macro-F1 {result['eval/macro_f1']:.4f}, "
        f"train {result['time/train_s']:.1f}s ({result['throughput/train_samples_per_s']:.1f} samples/s)\n"
        f"[ptexp] outputs: {run_dir}",
        flush=True,
    )
    if cfg.tracking.enabled:
        print(f"[ptexp] MLflow: mlflow ui --backend-store-uri {tracking_uri(cfg)}", flush=True)
    return accuracy


if __name__ == "__main__":
    check_group_choices(sys.argv[1:])
    main()

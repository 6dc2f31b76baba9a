"""Cross-task benchmark (issue 15): MiniLM-L6 on GLUE RTE, MRPC, STS-B, CoLA and SST-2 (the 20,000-row subset of
benchmarks/accuracy.py); full, prefix and LoRA with 3 seeds, IA3, BitFit, prompt and linear probe with 1; beside
them Hugging Face Trainer with run_glue's recipe (benchmarks/hf_peer.py), with dynamic padding and with
group_by_length. Per task: the primary dev metric (accuracy for SST-2/RTE, F1 for MRPC, Pearson for STS-B, MCC for
CoLA) mean +- std, train seconds, time relative to full, trainable share, gap to full, and PASS/MISS per target.
Everything goes to MLflow (one experiment per task, ``<experiment>-<task>``); the tables to stdout and to
``<output-root>/<experiment>.md``, every number to ``<experiment>.json``.

    python benchmarks/tasks.py --select           # 1. recipes chosen on the selection split -> tasks_recipes.json
    python benchmarks/tasks.py                    # 2. the benchmark, with those recipes
    python benchmarks/tasks.py --summary-only     # reprint the tables from MLflow
    python benchmarks/tasks.py --plan             # estimated wall time of 1. and 2. (no training)
    python benchmarks/tasks.py --quick            # a look: 1 seed, 500 train rows, 1 epoch, full/prefix/lora + peer

Expected time on 2 quiet CPU cores (``--plan``: per-step seconds ~ padded tokens + 170, scaled to the README's
187 s per full epoch of the SST-2 subset): about 6.4 h for the benchmark with DEFAULT_RECIPES (the peer's 3 epochs x
3 seeds x 2 samplers is about 60% of it; more where --select picks 3 epochs) and about 3.3 h for ``--select``.
``--quick`` takes about 13 minutes for all five tasks (``--plan --quick``) and writes to experiment ``tasks-quick``,
so its runs never mix with the benchmark's. Recipes come from ``<output-root>/tasks_recipes.json`` (``--select``);
without it every task runs DEFAULT_RECIPES (SST-2's tuned recipes), and the report says so.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from common import ROOT, SHARED_DATA, finished_runs, run_ptexp


@dataclass(frozen=True)
class Task:
    preset: str  # data=PRESET
    data_dir: Path  # data.data_dir=DIR
    metric: str  # primary metric: eval/<metric> on dev, selection/<metric> on the selection split
    train_rows: int | None  # data.max_train_samples (None: every row)
    select_rows: int  # data.selection_rows for --select


GLUE = SHARED_DATA / "glue"
TASKS = {  # the one table to adjust at merge
    "sst2": Task("sst2", SHARED_DATA / "sst2", "accuracy", 20000, 1000),
    "rte": Task("glue_rte", GLUE / "RTE", "accuracy", None, 250),
    "mrpc": Task("glue_mrpc", GLUE / "MRPC", "f1", None, 400),
    "stsb": Task("glue_stsb", GLUE / "STS-B", "pearson", None, 600),
    "cola": Task("glue_cola", GLUE / "CoLA", "mcc", None, 850),
}
MAIN_METHODS = ("full", "prefix", "lora")  # --seeds seeds; the others --other-seeds
OTHER_METHODS = ("ia3", "bitfit", "prompt", "linear_probe")
PEERS = ("hf_trainer", "hf_trainer_grouped")  # dynamic padding; train_sampling_strategy=group_by_length
PEER_RECIPE = {"lr": 2e-5, "epochs": 3.0}  # run_glue's usual (batch 32 in hf_peer.py)
# Without --select results: SST-2's tuned recipes (conf/experiment/sst2_compare.yaml); lr None = conf/method's.
DEFAULT_RECIPES = {
    "full": {"lr": 2e-4, "epochs": 1.0},
    "prefix": {"lr": 2e-2, "epochs": 1.5, "prefix_length": 20},
    "lora": {"lr": 2e-3, "epochs": 1.4},
    "ia3": {"lr": None, "epochs": 1.0},
    "bitfit": {"lr": None, "epochs": 1.0},
    "prompt": {"lr": None, "epochs": 1.0},
    "linear_probe": {"lr": None, "epochs": 10.0},
}
GRID = {  # --select: every combination, seed 1, scored on the selection split
    "full": {"optimizer.lr": [1e-4, 2e-4], "trainer.epochs": [1, 3]},
    "prefix": {"optimizer.lr": [1e-2, 2e-2], "trainer.epochs": [1.5, 3], "prefix_length": [20]},
    "lora": {"optimizer.lr": [1e-3, 2e-3], "trainer.epochs": [1.4, 3]},
}
SELECT_OVERRIDES = ["trainer.select_best=true"]  # with data.selection_rows=N
QUICK = {"seeds": 1, "other_seeds": 0, "train_rows": 500, "epochs": 1.0, "experiment": "tasks-quick"}


def ptexp_overrides(name: str, args: argparse.Namespace, experiment: str) -> list[str]:
    """What every ptexp job of task ``name`` gets: data, subset, output root, MLflow experiment, check limits."""
    task = TASKS[name]
    rows = args.train_rows or task.train_rows
    return [
        f"data={task.preset}", f"data.data_dir={task.data_dir}", *([f"data.max_train_samples={rows}"] if rows else []),
        *([f"trainer.max_steps={args.max_steps}"] if args.max_steps else []), "trainer.progress=false",
        f"output_root={args.output_root}", f"tracking.experiment={experiment}", *args.extra,
    ]  # fmt: skip


def recipe_overrides(recipe: dict, args: argparse.Namespace) -> list[str]:
    epochs = args.epochs or recipe["epochs"]
    lr = [f"optimizer.lr={recipe['lr']:g}"] if recipe.get("lr") else []
    length = [f"prefix_length={recipe['prefix_length']}"] if recipe.get("prefix_length") else []
    return [*lr, f"trainer.epochs={epochs:g}", *length]


def load_recipes(args: argparse.Namespace) -> tuple[dict, str]:
    """{task: {method: recipe}} and where it came from."""
    recipes = {name: dict(DEFAULT_RECIPES) for name in TASKS}
    if args.recipes.is_file():
        for name, chosen in json.loads(args.recipes.read_text()).items():
            recipes.setdefault(name, dict(DEFAULT_RECIPES)).update(chosen)
        return recipes, f"chosen on the selection split ({args.recipes})"
    return recipes, f"DEFAULT_RECIPES (SST-2's tuned recipes; {args.recipes} not found: run --select first)"


def run_peer(name: str, task: Task, method: str, seed: int, args: argparse.Namespace) -> None:
    rows = args.train_rows or task.train_rows
    cmd = [
        sys.executable, str(ROOT / "benchmarks" / "hf_peer.py"), "--task", name, "--data-dir", str(task.data_dir),
        "--metric", task.metric, "--method", method, "--seed", str(seed), "--lr", f"{PEER_RECIPE['lr']:g}",
        "--epochs", f"{args.epochs or PEER_RECIPE['epochs']:g}", "--output-root", str(args.output_root),
        "--experiment", f"{args.experiment}-{name}", *(["--train-rows", str(rows)] if rows else []),
        *(["--max-steps", str(args.max_steps)] if args.max_steps else []),
    ]  # fmt: skip
    print(f"$ hf_peer.py {name} {method} seed {seed}", flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def run_task(name: str, recipes: dict, args: argparse.Namespace) -> None:
    """Every ptexp method (one sweep over its seeds each), then the peers (one process per seed)."""
    task = TASKS[name]
    for method in args.methods:
        count = args.seeds if method in MAIN_METHODS else args.other_seeds
        if count:
            seeds = ",".join(str(s) for s in range(1, count + 1))
            recipe = recipe_overrides(recipes[name][method], args)
            seconds = run_ptexp(
                [
                    *ptexp_overrides(name, args, f"{args.experiment}-{name}"),
                    f"method={method}",
                    f"seed={seeds}",
                    *recipe,
                ]
            )
            print(f"  {name} {method}: {seconds:.0f} s", flush=True)
    for method in PEERS if args.peers else ():
        for seed in range(1, args.seeds + 1):
            run_peer(name, task, method, seed, args)


def select(name: str, args: argparse.Namespace) -> dict:
    """Run GRID on the selection split (seed 1); full: the best score; prefix and LoRA: the best at or under full's
    train time (else the fastest). Returns {method: recipe with its selection score and seconds}."""
    task = TASKS[name]
    experiment = f"{args.experiment}-select-{name}"
    base = ptexp_overrides(name, args, experiment)
    methods = [m for m in args.methods if m in GRID]
    for method in methods:
        grid = [f"{key}={','.join(f'{v:g}' for v in values)}" for key, values in GRID[method].items()]
        run_ptexp([*base, f"method={method}", "seed=1", f"data.selection_rows={task.select_rows}", *SELECT_OVERRIDES,
                   *grid])  # fmt: skip
    runs = finished_runs(args.output_root, experiment)
    chosen: dict = {}
    for method in methods:
        scored = [
            {"lr": float(r.data.params["optimizer.lr"]), "epochs": float(r.data.params["trainer.epochs"]),
             **({"prefix_length": int(r.data.params["prefix_length"])} if method == "prefix" else {}),
             "selection": r.data.metrics[f"selection/{task.metric}"], "train_s": r.data.metrics["time/train_s"]}
            for r in runs if r.data.tags.get("ptexp.method") == method and f"selection/{task.metric}" in r.data.metrics
        ]  # fmt: skip
        if not scored:
            continue
        budget = chosen["full"]["train_s"] if method != "full" and "full" in chosen else float("inf")
        within = [s for s in scored if s["train_s"] <= budget]
        chosen[method] = (
            max(within, key=lambda s: s["selection"]) if within else min(scored, key=lambda s: s["train_s"])
        )
        print(f"  {name} {method}: {chosen[method]}", flush=True)
    return chosen


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--methods", nargs="*", default=[*MAIN_METHODS, *OTHER_METHODS])
    parser.add_argument("--seeds", type=int, default=3, help="seeds for full, prefix, LoRA and the peers")
    parser.add_argument("--other-seeds", type=int, default=1, help="seeds for the other methods")
    parser.add_argument("--no-peers", dest="peers", action="store_false", help="skip the HF Trainer runs")
    parser.add_argument("--train-rows", type=int, default=None, help="over each task's train rows (checks)")
    parser.add_argument("--epochs", type=float, default=None, help="the same epochs for every method and peer")
    parser.add_argument("--max-steps", type=int, default=None, help="over the epochs, ptexp and peer (checks)")
    parser.add_argument("--output-root", type=Path, default=ROOT / "outputs" / "benchmarks")
    parser.add_argument("--experiment", default=None, help="MLflow experiment prefix (default: tasks)")
    parser.add_argument("--recipes", type=Path, default=None, help="default: <output-root>/tasks_recipes.json")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="1 seed, 500 train rows, 1 epoch, full/prefix/lora")
    mode.add_argument("--select", action="store_true", help="choose the recipes on the selection split")
    parser.add_argument("--summary-only", action="store_true", help="reprint the tables from MLflow (with --quick too)")
    parser.add_argument("--plan", action="store_true", help="estimate the wall time (other flags apply); no training")
    parser.add_argument("extra", nargs="*", help="extra Hydra overrides for every ptexp run")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.other_seeds = QUICK["seeds"], QUICK["other_seeds"]
        args.train_rows, args.epochs = args.train_rows or QUICK["train_rows"], args.epochs or QUICK["epochs"]
        args.methods = [m for m in args.methods if m in MAIN_METHODS]
    args.experiment = args.experiment or (QUICK["experiment"] if args.quick else "tasks")
    args.recipes = args.recipes or args.output_root / "tasks_recipes.json"
    return args


def main() -> None:
    from tasks_report import plan, report

    args = parse_args()
    if args.plan:
        plan(args)
        return
    if args.select:
        chosen = {name: select(name, args) for name in args.tasks}
        args.output_root.mkdir(parents=True, exist_ok=True)
        args.recipes.write_text(json.dumps(chosen, indent=2) + "\n")
        print(f"recipes written to {args.recipes}")
        return
    recipes, origin = load_recipes(args)
    if not args.summary_only:
        for name in args.tasks:
            run_task(name, recipes, args)
    report(args, origin)


if __name__ == "__main__":
    main()

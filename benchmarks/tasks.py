"""Cross-task benchmark (issue 15): MiniLM-L6 on GLUE RTE, MRPC, STS-B, CoLA and SST-2 (the 20,000-row subset of
benchmarks/accuracy.py); full, prefix and LoRA with 3 seeds, IA3, BitFit, prompt and linear probe with 1; beside
them Hugging Face Trainer (benchmarks/hf_peer.py), with random batches and with group_by_length, at full's chosen
recipe and at run_glue's default one. Per task: the primary dev metric (accuracy for SST-2/RTE, F1 for MRPC, Pearson
for STS-B, MCC for CoLA) mean +- std, train seconds, time relative to full, trainable share, gap to full, and
PASS/MISS per target. Everything goes to MLflow (one experiment per task, ``<experiment>-<task>``); the tables to
stdout and to ``<output-root>/<experiment>.md``, every number to ``<experiment>.json``, the chosen learning rates to
``<experiment>_recipes.json``.

The protocol is ``python -m ptexp.study``'s (README, "Studies"), one study per task: each task holds out
``Task.select_rows`` train rows (``--selection-rows``) as the selection split; every ptexp run trains ``--epochs``
epochs (3) and ``trainer.select_best`` restores its best epoch on that split. Full, prefix (P=20) and LoRA run every
learning rate of GRID with seed 1; prefix and LoRA also at the most whole epochs that fit in 0.9x the chosen full
run's train time (``study.budget.fill``), when that is more than 3. The best ``selection/best_<metric>`` wins
(prefix and LoRA: the best at or under full's train time), then seeds 2..N run at that recipe. A second study runs
the other methods at their default rate, without a budget. The dev split is only scored, never used to choose. The
peers (both samplers, --seeds seeds) train on the same rows (the selection rows left out) at full's chosen recipe
(its learning rate and epochs, the best epoch on the selection split; everything else is the shared config), which
the "full >= Trainer" targets use, and at run_glue's default recipe (RUN_GLUE: what a user gets by default). The
peer's head is AutoModelForSequenceClassification's, on the first token (``model.pooling=cls``). Finished runs are
found in MLflow and skipped, so an interrupted benchmark, or a later one with more ``--seeds``, goes on where the
last stopped.

    python benchmarks/tasks.py                    # the benchmark
    python benchmarks/tasks.py --summary-only     # reprint the tables from MLflow
    python benchmarks/tasks.py --plan             # estimated wall time (no training)
    python benchmarks/tasks.py --quick            # a look: 1 seed, 500 train rows, 1 epoch, one lr, + peer

``--plan`` (benchmarks/tasks_plan.py: per-step seconds ~ padded tokens + 170, scaled to the README's 187 s per full
epoch of the SST-2 subset; it counts start-up per run and so runs high) puts the whole benchmark at about 17 h on 2
CPU cores (8 of them the four peers), ``--quick`` at about 25 minutes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common import ROOT, SHARED_DATA, finished_runs
from hf_peer import PEER_TAG

from ptexp.study.choose import FILL_MARGIN
from ptexp.study.spec import value_text


@dataclass(frozen=True)
class Task:
    preset: str  # data=PRESET
    data_dir: Path  # data.data_dir=DIR
    metric: str  # primary metric: eval/<metric> on dev, selection/<metric> on the selection split
    train_rows: int | None  # data.max_train_samples (None: every row)
    select_rows: int  # data.selection_rows (about a tenth of the train rows, at most 1000)


GLUE = SHARED_DATA / "glue"
TASKS = {  # the one table to adjust at merge
    "sst2": Task("sst2", SHARED_DATA / "sst2", "accuracy", 20000, 1000),
    "rte": Task("glue_rte", GLUE / "RTE", "accuracy", None, 250),
    "mrpc": Task("glue_mrpc", GLUE / "MRPC", "f1", None, 400),
    "stsb": Task("glue_stsb", GLUE / "STS-B", "pearson", None, 600),
    "cola": Task("glue_cola", GLUE / "CoLA", "mcc", None, 850),
}
MAIN_METHODS = ("full", "prefix", "lora")  # --seeds seeds, learning rate chosen from GRID; the others --other-seeds
OTHER_METHODS = ("ia3", "bitfit", "prompt", "linear_probe")  # conf/method's learning rate


@dataclass(frozen=True)
class Peer:
    grouped: bool  # trainer.group_by_length: Trainer's group_by_length sampler, else random batches
    full_recipe: bool  # at full's chosen recipe (learning rate, epochs, best epoch), else at RUN_GLUE
    title: str  # its name in the report


PEERS = {  # hf_peer.py --label -> what it runs
    "hf_trainer": Peer(False, True, "hf_trainer (full's recipe)"),
    "hf_trainer_grouped": Peer(True, True, "hf_trainer_grouped (full's recipe)"),
    "hf_trainer_run_glue": Peer(False, False, "hf_trainer (run_glue default)"),
    "hf_trainer_grouped_run_glue": Peer(True, False, "hf_trainer_grouped (run_glue default)"),
}
# run_glue's recipe, what a user gets by default: TrainingArguments' learning rate, no warm-up, no weight decay,
# 3 epochs, batch 32, 128 tokens, the last step's model (betas, eps, grad clip 1.0 and the linear decay: ptexp's too)
RUN_GLUE = {"optimizer.lr": 2e-5, "trainer.epochs": 3.0, "trainer.batch_size": 32, "data.max_length": 128,
            "optimizer.warmup_ratio": 0.0, "optimizer.weight_decay": 0.0, "trainer.select_best": False}  # fmt: skip
# The learning rates tried on the selection split (seed 1); the first is SST-2's tuned one (conf/experiment/
# sst2_compare.yaml), the one --quick uses. The epoch is chosen by trainer.select_best within --epochs.
GRID = {"full": (2e-4, 1e-4), "prefix": (2e-2, 5e-3, 5e-2), "lora": (2e-3, 5e-4, 5e-3)}
LONGER = ("prefix", "lora")  # study.budget.fill: their grid also at the most epochs within TIME_SHARE x full's time
TIME_SHARE = FILL_MARGIN  # under 1.0, so that run-to-run noise keeps the longer runs within full's time
MIN_EPOCHS = {"linear_probe": 10.0}  # a linear probe's steps cost ~4% of full's: give it more of them
QUICK = {"seeds": 1, "other_seeds": 0, "train_rows": 500, "epochs": 1.0, "experiment": "tasks-quick"}


def study_overrides(name: str, args: argparse.Namespace) -> list[str]:
    """What every ptexp job of task ``name`` gets: data, subset, selection split, output root, MLflow experiment,
    check limits."""
    return [
        *task_data(name, args.train_rows or TASKS[name].train_rows, selection_rows(name, args)),
        *([f"trainer.max_steps={args.max_steps}"] if args.max_steps else []), "trainer.progress=false",
        f"output_root={args.output_root}", f"tracking.experiment={args.experiment}-{name}", *args.extra,
    ]  # fmt: skip


def task_data(name: str, rows: int | None, selection: int | None) -> list[str]:
    """The overrides that read task ``name``: its preset and folder, ``rows`` train rows (None: all), ``selection``
    of them held out as the selection split (None: none)."""
    task = TASKS[name]
    return [f"data={task.preset}", f"data.data_dir={task.data_dir}", *([f"data.max_train_samples={rows}"] if rows
            else []), *([f"data.selection_rows={selection}"] if selection else [])]  # fmt: skip


def selection_rows(name: str, args: argparse.Namespace) -> int:
    return args.selection_rows or TASKS[name].select_rows


def finished(name: str, method: str, epochs: float, args: argparse.Namespace) -> dict[tuple[float, int], object]:
    """(learning rate, seed) -> the finished run of ``method`` (ptexp's or a peer's) with this invocation's rows,
    selection rows and ``epochs``, read from MLflow once, so that an interrupted benchmark resumes where it stopped."""
    rows, held_out = str(args.train_rows or TASKS[name].train_rows), str(selection_rows(name, args))
    found = {}
    for run in finished_runs(args.output_root, f"{args.experiment}-{name}"):
        p = run.data.params
        if (run.data.tags.get("ptexp.method") == method and ours(run) and p.get("data.max_train_samples") == rows
                and p.get("data.selection_rows") == held_out
                and float(p.get("trainer.epochs", "nan")) == epochs):  # fmt: skip
            found[(float(p["optimizer.lr"]), int(p["seed"]))] = run
    return found


def ours(run) -> bool:
    """Whether an MLflow run is one this benchmark reads: a ptexp run, or a peer run that hf_peer.py logged (tag
    PEER_TAG: the peer runs of its earlier versions were scored by other code)."""
    return run.data.tags.get("ptexp.method") not in PEERS or PEER_TAG in run.data.tags


def method_epochs(method: str, args: argparse.Namespace) -> float:
    return max(args.epochs, MIN_EPOCHS.get(method, 0.0))


def grid(method: str, args: argparse.Namespace) -> tuple[float, ...]:
    return GRID[method][:1] if args.quick else GRID[method]


def study_settings(methods: list[str], args: argparse.Namespace, seeds: int, main: bool) -> list[str]:
    """The study section: GRID's rates and --epochs for the main methods (prefix and LoRA also at the most epochs
    within TIME_SHARE x full's time, but for --quick and --max-steps), within full's train time (equal steps for
    --quick and --max-steps); conf/method's rate for the others, without a budget."""
    if main:
        rates = ",".join(f"{m}:{{optimizer.lr:[{','.join(f'{lr:g}' for lr in grid(m, args))}]}}" for m in methods)
        rule = "none" if "full" not in methods else "steps" if args.quick or args.max_steps else "time"
        fill = rule == "time"
    else:
        rates = ",".join(f"{m}:{{trainer.epochs:[{method_epochs(m, args):g}]}}" for m in methods)
        rule, fill = "none", False
    return [f"method={','.join(methods)}", f"study.grid={{trainer.epochs:[{args.epochs:g}]}}",
            f"study.method_grid={{{rates}}}", f"study.budget.rule={rule}", f"study.budget.fill={str(fill).lower()}",
            f"study.seeds=[{','.join(str(seed) for seed in range(1, seeds + 1))}]"]  # fmt: skip


def run_study(name: str, methods: list[str], args: argparse.Namespace, seeds: int, main: bool) -> None:
    """``python -m ptexp.study`` for these methods of task ``name`` (its progress lines shown, the jobs' not)."""
    if not methods or seeds < 1:
        return
    settings = study_settings(methods, args, seeds, main)
    cmd = [sys.executable, "-m", "ptexp.study", *study_overrides(name, args), *settings]
    print(f"$ python -m ptexp.study {name} {','.join(methods)}", flush=True)
    started = time.perf_counter()
    with subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True) as process:
        for line in process.stdout:
            if line.startswith("[ptexp.study]"):
                print(f"  {line.rstrip()}", flush=True)
    if process.returncode != 0:
        raise SystemExit(f"error: the study of {name} exited with status {process.returncode}")
    print(f"  {name} {','.join(methods)}: {time.perf_counter() - started:.0f} s", flush=True)


def chosen_recipes(name: str, methods: list[str], args: argparse.Namespace) -> dict:
    """{method: chosen recipe} from the study's parent run: the chosen grid run's rate, epochs, selection score,
    train seconds and report label, and every grid point's selection score."""
    parents = [r for r in finished_runs(args.output_root, f"{args.experiment}-{name}")
               if r.data.tags.get("ptexp.study") == "parent"]  # fmt: skip
    tags, chosen = parents[-1].data.tags, {}
    for method in methods:
        run = next(r for r in finished_runs(args.output_root, f"{args.experiment}-{name}")
                   if r.info.run_id == tags[f"study.{method}.chosen_run"])  # fmt: skip
        params, metric = run.data.params, TASKS[name].metric
        chosen[method] = {
            "lr": float(params["optimizer.lr"]), "epochs": float(params["trainer.epochs"]),
            "selection": run.data.metrics[f"selection/best_{metric}"], "train_s": run.data.metrics["time/train_s"],
            "label": recipe_label(method, params),
            "tried": {g["recipe"]: g["selection"] for g in json.loads(tags[f"study.{method}.grid"])},
        }  # fmt: skip
    return chosen


def recipe_label(method: str, params: dict) -> str:
    """The report's row name: method (a peer's title), prefix length, learning rate, epochs or steps (from MLflow
    params)."""
    length = params.get("prefix_length", "None")
    steps = params.get("trainer.max_steps", "None")
    span = f"{steps} steps" if steps != "None" else f"{float(params['trainer.epochs']):g} ep"
    name = PEERS[method].title if method in PEERS else method
    return f"{name}{'' if length == 'None' else f' P={length}'}, lr {float(params['optimizer.lr']):g}, {span}"


def peer_recipe(label: str, chosen: dict, args: argparse.Namespace) -> dict | None:
    """What a peer runs over the shared config: full's chosen learning rate and epochs with the best epoch on the
    selection split (None while full has no chosen recipe), or RUN_GLUE (--quick: its epochs)."""
    if not PEERS[label].full_recipe:
        return RUN_GLUE | ({"trainer.epochs": args.peer_epochs} if args.peer_epochs is not None else {})
    full = chosen.get("full")
    if full is None:
        return None
    return {"optimizer.lr": full["lr"], "trainer.epochs": full["epochs"], "trainer.select_best": True}


def run_peer(name: str, label: str, seed: int, recipe: dict, args: argparse.Namespace) -> None:
    """``benchmarks/hf_peer.py`` for this task, seed and recipe, unless MLflow has it finished."""
    if (recipe["optimizer.lr"], seed) in finished(name, label, recipe["trainer.epochs"], args):
        return
    settings = [f"{key}={value_text(value)}" for key, value in recipe.items()]
    grouped = value_text(PEERS[label].grouped)
    cmd = [sys.executable, str(ROOT / "benchmarks" / "hf_peer.py"), "--label", label, *study_overrides(name, args),
           *settings, f"trainer.group_by_length={grouped}", "model.pooling=cls", f"seed={seed}"]  # fmt: skip
    print(f"$ hf_peer.py {name} {label} seed {seed}", flush=True)
    started = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    print(f"  {name} {label} seed {seed}: {time.perf_counter() - started:.0f} s", flush=True)


def run_task(name: str, args: argparse.Namespace, known: dict) -> dict:
    """The study of full, prefix and LoRA (GRID, --seeds), then of the other methods (their default rate,
    --other-seeds), then the peers (at full's chosen recipe: this study's, else ``known``'s, the recipes file's).
    Returns {method: chosen recipe} of the main methods."""
    main = [m for m in MAIN_METHODS if m in args.methods]
    run_study(name, main, args, args.seeds, main=True)
    run_study(name, [m for m in OTHER_METHODS if m in args.methods], args, args.other_seeds, main=False)
    chosen = chosen_recipes(name, main, args) if main else {}
    for label in PEERS if args.peers else ():
        recipe = peer_recipe(label, known | chosen, args)
        if recipe is None:
            print(f"  {name} {label}: skipped, full has no chosen recipe yet", flush=True)
            continue
        for seed in range(1, args.seeds + 1):
            run_peer(name, label, seed, recipe, args)
    return chosen


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--methods", nargs="*", default=[*MAIN_METHODS, *OTHER_METHODS])
    parser.add_argument("--seeds", type=int, default=3, help="seeds for full, prefix, LoRA and the peers")
    parser.add_argument("--other-seeds", type=int, default=1, help="seeds for the other methods")
    parser.add_argument("--no-peers", dest="peers", action="store_false", help="skip the HF Trainer runs")
    parser.add_argument("--train-rows", type=int, default=None, help="over each task's train rows")
    parser.add_argument("--selection-rows", type=int, default=None, help="over each task's selection rows")
    parser.add_argument("--epochs", type=float, default=3.0, help="ptexp's epochs; the best on the selection split")
    parser.add_argument("--max-steps", type=int, default=None, help="over the epochs, ptexp and peer (checks)")
    parser.add_argument("--output-root", type=Path, default=ROOT / "outputs" / "benchmarks")
    parser.add_argument("--experiment", default=None, help="MLflow experiment prefix (default: tasks)")
    parser.add_argument("--quick", action="store_true", help="1 seed, 500 train rows, 1 epoch, one lr, no grid")
    parser.add_argument("--summary-only", action="store_true", help="reprint the tables from MLflow (with --quick too)")
    parser.add_argument("--plan", action="store_true", help="estimate the wall time (other flags apply); no training")
    parser.add_argument("extra", nargs="*", help="extra Hydra overrides for every ptexp run")
    args = parser.parse_args()
    args.peer_epochs = None  # RUN_GLUE's
    if args.quick:
        args.seeds, args.other_seeds = QUICK["seeds"], QUICK["other_seeds"]
        args.train_rows, args.epochs = args.train_rows or QUICK["train_rows"], QUICK["epochs"]
        args.peer_epochs = QUICK["epochs"]
        args.methods = [m for m in args.methods if m in MAIN_METHODS]
    args.experiment = args.experiment or (QUICK["experiment"] if args.quick else "tasks")
    args.recipes = args.output_root / f"{args.experiment}_recipes.json"
    return args


def main() -> None:
    from tasks_plan import plan
    from tasks_report import report

    args = parse_args()
    if args.plan:
        plan(args)
        return
    recipes = json.loads(args.recipes.read_text()) if args.recipes.is_file() else {}
    if not args.summary_only:
        for name in args.tasks:
            recipes[name] = run_task(name, args, recipes.get(name, {}))
            args.output_root.mkdir(parents=True, exist_ok=True)
            args.recipes.write_text(json.dumps(recipes, indent=2) + "\n")
    report(args, recipes)


if __name__ == "__main__":
    main()

"""Issue 23's speed comparison, in one invocation: ptexp's full fine-tuning against Hugging Face Trainer
(benchmarks/hf_peer.py) at the same recipe, rows and model, on every task of benchmarks/tasks.py.

Per task, three variants run --repeats times, alternated (ptexp, Trainer grouped, Trainer random, ptexp, ...), each
in its own process: ``python -m ptexp method=full`` (its length-grouped batches) and hf_peer.py with
``trainer.group_by_length=true`` (Trainer's group_by_length) and ``false`` (random batches). All three get the same
overrides: the task's first --train-rows train rows (ptexp's subset; no selection split), --epochs, --lr, --seed,
and everything else ptexp's defaults (batch 32, 128 tokens, warm-up 6%, weight decay 0.01, grad clip 1.0,
fused AdamW), plus ``model.pooling=cls`` so that both build the same model (the pooler on the first token, the head
of AutoModelForSequenceClassification); ptexp also gets ``trainer.infer_batches=0`` (no inference timing). Each
run's ``time/train_s`` is read back from MLflow: training only (ptexp leaves its evaluations out; the peer times
``trainer.train()``, which evaluates nothing here).

Targets (issue 23): ptexp <= 0.9x Trainer group_by_length and <= 0.6x Trainer with random batches, as the ratio of
the mean train seconds; each repeat's own ratio (its runs ran one after the other) shows the spread. Each sampler's
padded tokens per epoch (the samplers themselves on ptexp's rows, mean of 5 draws) say how much of a gap is
padding. The load average is printed before and after, and recorded before every run. Tables to stdout and
``--out``/peer_speed.md, every number to peer_speed.json.

Why 1,000 rows, 2 epochs, lr 1e-4 by default: 1,000 train rows is the size of the README's cross-task results
(RTE, the smallest task, has 2,490), 2 epochs give 64 steps a run, so that start-up and the first slow steps
weigh little, and 1e-4 is in full's learning-rate grid (the rate does not change the time).

    python benchmarks/peer_speed.py                 # 5 tasks x 3 variants x 2 repeats
    python benchmarks/peer_speed.py --plan          # the estimated wall time, no training
    python benchmarks/peer_speed.py --smoke --tasks rte --repeats 1   # model=tiny on 32 rows: a check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, composed, epoch_padding, finished_runs, markdown_table, token_lengths
from tasks import TASKS, task_data
from tasks_plan import EVAL_COST, START_S, epoch_seconds, step_scale

from ptexp.errors import OneLineParser

VARIANTS = {  # name -> (what the table calls it, the sampler it batches with: common.SAMPLERS)
    "ptexp": ("ptexp full (length-grouped)", "ptexp"),
    "grouped": ("Trainer group_by_length", "trainer"),
    "random": ("Trainer random batches", "random"),
}
TARGETS = {"grouped": 0.9, "random": 0.6}  # ptexp's train time <= this x the variant's
SMOKE = ["model=tiny", "data.max_eval_samples=16"]  # --smoke: over every run's overrides, with 32 rows and 1 epoch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(prog="benchmarks/peer_speed.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--train-rows", type=int, default=None, help="train rows per task (default 1000; smoke 32)")
    parser.add_argument("--epochs", type=float, default=None, help="epochs (default 2; smoke 1)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each variant, alternated")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "benchmarks" / "peer_speed")
    parser.add_argument("--plan", action="store_true", help="estimate the wall time; no training")
    parser.add_argument("--smoke", action="store_true", help="model=tiny, 32 rows, 1 epoch, 16 dev rows: a check")
    parser.add_argument("extra", nargs="*", help="Hydra overrides for every run (ptexp's and the peer's)")
    args = parser.parse_args(argv)
    args.train_rows = args.train_rows or (32 if args.smoke else 1000)
    args.epochs = args.epochs or (1.0 if args.smoke else 2.0)
    args.extra = [*(SMOKE if args.smoke else []), *args.extra]
    if args.repeats < 1 or args.train_rows < 1 or args.epochs <= 0:
        parser.error("--repeats and --train-rows must be >= 1 and --epochs > 0")
    return args


def shared_overrides(name: str, args: argparse.Namespace) -> list[str]:
    """What every run of task ``name`` gets, ptexp's and the peer's: the recipe and where it logs."""
    return [*task_data(name, args.train_rows, None), f"optimizer.lr={args.lr:g}", f"trainer.epochs={args.epochs:g}",
            f"seed={args.seed}", "model.pooling=cls", "trainer.progress=false", f"output_root={args.out}",
            f"tracking.experiment=peer-speed-{name}", *args.extra]  # fmt: skip


def command(variant: str, overrides: list[str]) -> list[str]:
    """The process of one run of ``variant``."""
    if variant == "ptexp":
        return [sys.executable, "-m", "ptexp", "method=full", *overrides, "trainer.infer_batches=0",
                "trainer.group_by_length=true"]  # fmt: skip
    label = "hf_trainer_grouped" if variant == "grouped" else "hf_trainer"
    return [sys.executable, str(ROOT / "benchmarks" / "hf_peer.py"), "--label", label, *overrides,
            f"trainer.group_by_length={str(variant == 'grouped').lower()}"]  # fmt: skip


def run_one(name: str, variant: str, repeat: int, args: argparse.Namespace) -> dict:
    """One run in its own process, then its numbers from MLflow (found by a tag of its own)."""
    token = f"{args.stamp}-{name}-{variant}-{repeat}"
    load = os.getloadavg()[0]
    print(f"$ {name} {variant} repeat {repeat} (load {load:.2f})", flush=True)
    cmd = command(variant, [*shared_overrides(name, args), f"+tracking.tags.peer_speed={token}"])
    done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:  # its error line (a bad override: status 2, passed on), else the traceback's end
        sys.stderr.write(done.stderr[-3000:])
        raise SystemExit(2 if done.returncode == 2 else f"error: {name} {variant} exited with status {done.returncode}")
    run = next(r for r in finished_runs(args.out, f"peer-speed-{name}") if r.data.tags.get("peer_speed") == token)
    metric = TASKS[name].metric
    found = {"train_s": run.data.metrics["time/train_s"], "steps": int(run.data.metrics["train/steps"]),
             "dev": run.data.metrics[f"eval/{metric}"], "load": load, "run_id": run.info.run_id}  # fmt: skip
    print(f"  {found['train_s']:.1f} s train, {found['steps']} steps, dev {metric} {found['dev']:.4f}", flush=True)
    return found


def padding(name: str, args: argparse.Namespace) -> dict:
    """Real tokens per epoch and each variant's padded tokens per epoch (mean of 5 draws of its sampler) and steps."""
    overrides = shared_overrides(name, args)
    lengths, batch = token_lengths(overrides)["train"], composed(overrides).trainer.batch_size
    found = {"real_tokens": sum(lengths), "rows": len(lengths)}
    for variant, (_, sampler) in VARIANTS.items():
        draws = [epoch_padding(lengths, batch, sampler, seed) for seed in range(5)]
        found[variant] = {"padded_tokens": statistics.mean(d[0] for d in draws), "steps": draws[0][1]}
    return found


def ratios(runs: dict[str, list[dict]]) -> dict[str, dict]:
    """Per peer variant: ptexp's mean train seconds over its mean, each repeat's ratio, and PASS/MISS."""
    out = {}
    ours = [r["train_s"] for r in runs["ptexp"]]
    for variant, target in TARGETS.items():
        theirs = [r["train_s"] for r in runs[variant]]
        ratio = statistics.mean(ours) / statistics.mean(theirs)
        each = [a / b for a, b in zip(ours, theirs, strict=True)]
        out[variant] = {"ratio": ratio, "per_repeat": each, "target": target, "passed": ratio <= target,
                        "straddles": min(each) <= target < max(each)}  # fmt: skip
    return out


def task_markdown(name: str, result: dict) -> str:
    """One task's table: each variant's runs, mean, ratio and target, padding and steps, dev score."""
    metric, pad = TASKS[name].metric, result["padding"]
    headers = ("variant", "train s per repeat", "mean s", "ptexp / this (per repeat)", "target",
               "padded tokens / epoch", "steps", f"dev {metric}")  # fmt: skip
    rows = []
    for variant, (title, _) in VARIANTS.items():
        runs, r = result["runs"][variant], result["ratios"].get(variant)
        seconds = [run["train_s"] for run in runs]
        ratio = f"{r['ratio']:.2f} ({', '.join(f'{x:.2f}' for x in r['per_repeat'])})" if r else ""
        verdict = f"<= {r['target']}: {'PASS' if r['passed'] else 'MISS'}" if r else ""
        verdict += " (repeats straddle it)" if r and r["straddles"] else ""
        rows.append((title, ", ".join(f"{s:.1f}" for s in seconds), f"{statistics.mean(seconds):.1f}", ratio,
                     verdict, f"{pad[variant]['padded_tokens']:,.0f}", runs[0]["steps"],
                     ", ".join(f"{100 * run['dev']:.1f}" for run in runs)))  # fmt: skip
    real = f"{pad['real_tokens']:,} real tokens per epoch in {pad['rows']} rows"
    return f"### {name} ({TASKS[name].preset}; {real})\n\n{markdown_table(headers, rows)}\n"


def summary(results: dict[str, dict]) -> str:
    headers = ("task", "ptexp / Trainer grouped (target <= 0.9)", "ptexp / Trainer random (target <= 0.6)")
    rows = [(name, *(f"{r['ratios'][v]['ratio']:.2f} {'PASS' if r['ratios'][v]['passed'] else 'MISS'}"
                     for v in TARGETS)) for name, r in results.items()]  # fmt: skip
    return markdown_table(headers, rows)


def plan(args: argparse.Namespace) -> None:
    """Estimated wall time: the tasks benchmark's cost model (benchmarks/tasks_plan.py) for each run."""
    scale, total = step_scale(), 0.0
    for name in args.tasks:
        lengths = token_lengths(shared_overrides(name, args))
        evals = scale * EVAL_COST * sum(lengths["eval"])  # ptexp scores dev each epoch, the peer once
        each = {v: START_S + args.epochs * epoch_seconds(lengths["train"], sampler, scale)
                + evals * (args.epochs if v == "ptexp" else 1) for v, (_, sampler) in VARIANTS.items()}  # fmt: skip
        total += args.repeats * sum(each.values())
        print(f"  {name}: " + ", ".join(f"{v} ~{s:.0f} s" for v, s in each.items()) + f" per run, x{args.repeats}")
    print(f"estimate on 2 quiet cores: ~{total / 60:.0f} min for {len(args.tasks) * 3 * args.repeats} runs")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.plan:
        plan(args)
        return
    args.stamp, started = time.strftime("%Y%m%d-%H%M%S"), time.perf_counter()
    load_before = os.getloadavg()
    print(f"load average before: {', '.join(f'{x:.2f}' for x in load_before)}", flush=True)
    results = {}
    for name in args.tasks:
        runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
        for repeat in range(1, args.repeats + 1):
            for variant in VARIANTS:
                runs[variant].append(run_one(name, variant, repeat, args))
        results[name] = {"runs": runs, "ratios": ratios(runs), "padding": padding(name, args)}
        print("\n" + task_markdown(name, results[name]), flush=True)
    load_after = os.getloadavg()
    print(f"load average after: {', '.join(f'{x:.2f}' for x in load_after)}", flush=True)
    command_line = " ".join(["python benchmarks/peer_speed.py", *(argv if argv is not None else sys.argv[1:])])
    when = f"{time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} CPUs"
    recipe = f"train rows {args.train_rows}, epochs {args.epochs:g}, lr {args.lr:g}, seed {args.seed}"
    loads = ", ".join(f"{x:.2f}" for x in load_before) + " before; " + ", ".join(f"{x:.2f}" for x in load_after)
    text = (f"## ptexp full vs HF Trainer, same recipe (peer_speed.py)\n\n`{command_line}`: {when}; {recipe}, "
            f"{args.repeats} repeats; wall {(time.perf_counter() - started) / 60:.1f} min; load average (1, 5, 15 "
            f"min) {loads} after\n\n{summary(results)}\n\n"
            + "\n".join(task_markdown(name, r) for name, r in results.items()))  # fmt: skip
    print("\n" + summary(results))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "peer_speed.md").write_text(text)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "plan")} | {"command": command_line}
    numbers = {"settings": settings, "load_before": load_before, "load_after": load_after, "tasks": results}
    (args.out / "peer_speed.json").write_text(json.dumps(numbers, indent=2) + "\n")
    print(f"written: {args.out / 'peer_speed.md'} and .json")


if __name__ == "__main__":
    main()

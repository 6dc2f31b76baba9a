"""Accuracy benchmark: every method on MiniLM and GLUE SST-2 (a fixed 20,000-row training subset, all 872 dev
rows), each with its default recipe, tracked in MLflow; prints dev accuracy mean +- std, train wall time, the
trainable share and the gap to full fine-tuning. A benchmark, not a test: it takes about an hour on 2 CPU cores.

    .venv/bin/python benchmarks/accuracy.py                       # the full comparison
    .venv/bin/python benchmarks/accuracy.py --methods prefix --seeds 1 --train-rows 2000   # a quick look
    .venv/bin/python benchmarks/accuracy.py --methods prefix --experiment accuracy-init-vocab prefix.init=vocab

The trailing key=value arguments go to every run (a variant of the recipes: give it its own --experiment, since the
table groups runs by method, epochs, P and lr only). ``--resume`` skips the seeds whose run of a method already
finished in the experiment, so an interrupted invocation goes on where it stopped when run again with it.
"""

from __future__ import annotations

import argparse

from common import ROOT, SHARED_DATA, finished_runs, mean_std, run_ptexp

MAIN_METHODS = ("full", "prefix", "lora")  # these get --seeds seeds, the others --other-seeds
# Each method runs experiment=sst2_compare: its default lr (conf/method/*.yaml) and its tuned epochs
# (trainer.method_epochs in conf/experiment/sst2_compare.yaml); --epochs gives every method the same epochs.


def run_sweep(method: str, seeds: list[int], args: argparse.Namespace, extra: list[str]) -> None:
    epochs = [f"++trainer.method_epochs.{method}={args.epochs:g}"] if args.epochs else []  # over the preset's
    seconds = run_ptexp([
        "experiment=sst2_compare", f"method={method}", f"seed={','.join(map(str, seeds))}",
        f"data.data_dir={args.data_dir}", f"data.max_train_samples={args.train_rows}", *epochs,
        "trainer.progress=false", f"output_root={args.output_root}", f"tracking.experiment={args.experiment}", *extra,
    ])  # fmt: skip
    print(f"  {method}: {seconds:.0f} s", flush=True)


def finished_seeds(args: argparse.Namespace, method: str) -> set[int]:
    """Seeds of ``method`` with a FINISHED run on ``--train-rows`` rows in the experiment."""
    runs = finished_runs(args.output_root, args.experiment)
    rows = str(args.train_rows)
    mine = [r for r in runs if r.data.tags.get("ptexp.method") == method]
    return {int(r.data.params["seed"]) for r in mine if r.data.params.get("data.max_train_samples") == rows}


def summarise(args: argparse.Namespace, methods: list[str]) -> None:
    runs = finished_runs(args.output_root, args.experiment)
    groups: dict[tuple[str, str, str], list] = {}  # (method, epochs, prefix_length) -> runs
    for r in runs:
        method = r.data.tags.get("ptexp.method")
        if method in methods and r.data.params.get("data.max_train_samples") == str(args.train_rows):
            params = r.data.params
            epochs, length = f"{float(params.get('trainer.epochs', 'nan')):g}", params.get("prefix_length", "None")
            if params.get("trainer.max_steps", "None") != "None":  # max_steps overrides epochs
                steps = int(params["trainer.max_steps"])
                per_epoch = -(-args.train_rows // int(params["trainer.batch_size"]))  # ceil: the last batch is short
                epochs = f"{steps} steps = {steps / per_epoch:.2g}"
            key = (method, epochs, length, params["optimizer.lr"])
            groups.setdefault(key, []).append(r)
    rows = {}
    for (method, epochs, length, lr), mine in sorted(groups.items(), key=lambda kv: methods.index(kv[0][0])):
        acc = [r.data.metrics["eval/accuracy"] for r in mine]
        label = method if length == "None" else f"{method} P={length}"
        mean, std = mean_std(acc)
        rows[f"{label}, lr {float(lr):g}, {epochs} ep"] = {
            "method": method,
            "n": len(acc),
            "mean": mean,
            "std": std,
            "train_s": mean_std([r.data.metrics["time/train_s"] for r in mine])[0],
            "pct": mine[0].data.metrics["params/trainable_pct"],
            "per_seed": sorted(
                (int(r.data.params["seed"]), r.data.metrics["eval/accuracy"], r.data.metrics["time/train_s"])
                for r in mine
            ),
        }
    fulls = [row for row in rows.values() if row["method"] == "full"]
    full = fulls[0]["mean"] if fulls else None
    budget = fulls[0]["train_s"] if fulls else None  # a method's recipe may take no more train time than full's
    print(f"\nMiniLM-L6, SST-2 train subset {args.train_rows} rows, dev 872 rows, experiment {args.experiment!r}")
    headers = ("method, recipe", "seeds", "dev accuracy", "train s", "/ full's", "trainable %", "gap to full")
    widths = (44, 6, 18, 9, 10, 13, 13)
    print("".join(f"{h:<{w}}" if i == 0 else f"{h:>{w}}" for i, (h, w) in enumerate(zip(headers, widths, strict=True))))
    for method, row in rows.items():
        gap = f"{100 * (row['mean'] - full):+.1f} pt" if full is not None else "n/a"
        accuracy = f"{100 * row['mean']:.1f} ± {100 * row['std']:.1f}"
        share = f"{row['train_s'] / budget:.2f}" if budget else "n/a"
        print(f"{method:<44}{row['n']:>6}{accuracy:>18}{row['train_s']:>9.0f}{share:>10}{row['pct']:>13.3f}{gap:>13}")
        print("    per seed: " + ", ".join(f"{seed}: {100 * acc:.2f} ({s:.0f} s)" for seed, acc, s in row["per_seed"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(SHARED_DATA / "sst2"))
    parser.add_argument("--train-rows", type=int, default=20000)
    parser.add_argument("--epochs", type=float, default=None, help="the same epochs for every method")
    parser.add_argument("--methods", nargs="+", default=["full", "prefix", "prompt", "lora", "ia3", "bitfit",
                                                         "linear_probe"])  # fmt: skip
    parser.add_argument("--seeds", type=int, default=3, help="seeds for full and prefix")
    parser.add_argument("--other-seeds", type=int, default=1, help="seeds for the other methods")
    parser.add_argument("--output-root", default=str(ROOT / "outputs" / "benchmarks"))
    parser.add_argument("--experiment", default="accuracy-benchmark")
    parser.add_argument("--summary-only", action="store_true", help="print the table from earlier runs")
    parser.add_argument("--resume", action="store_true", help="skip seeds that already finished in the experiment")
    parser.add_argument("extra", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()
    if not args.summary_only:
        for method in args.methods:
            count = args.seeds if method in MAIN_METHODS else args.other_seeds
            done = finished_seeds(args, method) if args.resume else set()
            seeds = [seed for seed in range(1, count + 1) if seed not in done]
            if seeds:
                run_sweep(method, seeds, args, args.extra)
    summarise(args, args.methods)


if __name__ == "__main__":
    main()

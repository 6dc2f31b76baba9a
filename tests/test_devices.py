"""Speed options (``trainer.precision``, ``trainer.compile``, fused Adam(W), TF32): what runs on this CPU, the
choices a CUDA device would get (with CUDA's answers faked: these machines have no GPU), and bad values."""

from __future__ import annotations

import json
import math
import time

import pytest
import torch
from torch import nn

from ptexp import evaluation, loop
from ptexp.config import OptimizerConfig, OptimizerName, Precision
from ptexp.devices import autocast_dtype, fused_optimizer, use_tf32
from ptexp.errors import UserError
from ptexp.optim import make_optimizer
from ptexp.trainer import run_experiment
from tests.conftest import TINY, make_config, run_cli, runs_in

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


def train_losses(run_dir) -> list[float]:
    rows = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    return [r["train/loss"] for r in rows if "train/loss" in r]


@pytest.mark.parametrize("method", ["full", "prefix"])
def test_bf16_on_cpu_trains_with_a_finite_loss_and_logs_the_precision(tiny_config, tmp_path, monkeypatch, method):
    seen = []
    real = loop.autocast

    def spy(dtype, device):
        seen.append((dtype, device.type))
        return real(dtype, device)

    monkeypatch.setattr(loop, "autocast", spy)  # the training forwards
    monkeypatch.setattr(evaluation, "autocast", spy)  # the evaluation forwards
    cfg = tiny_config(
        f"method={method}", "trainer.device=cpu", "trainer.precision=bf16", "trainer.max_steps=3", "trainer.log_every=1"
    )
    result = run_experiment(cfg, tmp_path / "run")
    assert len(seen) > 3 and set(seen) == {(torch.bfloat16, "cpu")}  # every train and eval forward
    losses = train_losses(tmp_path / "run")
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert math.isfinite(result["eval/loss"]) and 0 <= result["eval/accuracy"] <= 1
    (run,) = runs_in(tmp_path / "outputs" / "mlflow.db")
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["ptexp.precision"] == "bf16" and tags["ptexp.tf32"] == "false"
    assert tags["ptexp.fused_optimizer"] == "true" and tags["ptexp.compile"] == "false"  # AdamW, fused on CPU too
    assert run.data.params["trainer.precision"] == "bf16"
    with real(torch.bfloat16, CPU):  # what the autocast the trainer enters does to a matmul
        assert nn.Linear(4, 4)(torch.ones(2, 4)).dtype == torch.bfloat16


def test_compile_wraps_the_training_forward_and_auto_precision_is_fp32_on_cpu(tiny_config, tmp_path, monkeypatch):
    """The wiring, fast (the real torch.compile: the slow test below)."""
    compiled = []

    def fake_compile(module):
        compiled.append(module)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    cfg = tiny_config("method=prefix", "trainer.device=cpu", "trainer.compile=true", "trainer.max_steps=2")
    run_experiment(cfg, tmp_path / "run")
    assert len(compiled) == 1 and isinstance(compiled[0], nn.Module)
    (run,) = runs_in(tmp_path / "outputs" / "mlflow.db")
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["ptexp.compile"] == "true" and tags["ptexp.world_size"] == "1"
    assert tags["ptexp.precision"] == "fp32" and run.data.params["trainer.precision"] == "auto"


@pytest.mark.slow  # one inductor compile of the tiny model's training step takes about 65 s on 2 CPU cores
def test_compile_true_trains_on_cpu_for_a_couple_of_steps(tiny_config, tmp_path):
    # one batch of all 64 rows: every step has the same shape, so inductor compiles once
    cfg = tiny_config("trainer.compile=true", "trainer.max_steps=2", "trainer.batch_size=64", "trainer.log_every=1")
    result = run_experiment(cfg, tmp_path / "run")
    losses = train_losses(tmp_path / "run")
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert result["train/steps"] == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_auto_precision_means_bf16_autocast_tf32_and_fused_adamw(tiny_config, tmp_path):
    cfg = tiny_config("trainer.device=cuda", "trainer.max_steps=3", "trainer.log_every=1")
    result = run_experiment(cfg, tmp_path / "run")
    losses = train_losses(tmp_path / "run")
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses) and math.isfinite(result["eval/loss"])
    (run,) = runs_in(tmp_path / "outputs" / "mlflow.db")
    tags = run.data.tags
    assert tags["ptexp.precision"] == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
    assert tags["ptexp.tf32"] == "true" and torch.get_float32_matmul_precision() == "high"
    assert tags["ptexp.fused_optimizer"] == "true" and tags["device"].startswith("cuda")


# ---------------------------------------------------------------------------------------------------------------
# What a CUDA device would get (CUDA's answers faked)


@pytest.mark.parametrize(
    ("precision", "bf16_supported", "dtype", "tf32"),
    [
        ("auto", True, torch.bfloat16, True),
        ("auto", False, None, True),  # e.g. a V100: fp32 (TF32 needs Ampere; the flag is then harmless)
        ("bf16", True, torch.bfloat16, True),
        ("fp32", True, None, False),
    ],
)
def test_precision_choices_on_cuda(monkeypatch, precision, bf16_supported, dtype, tf32):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_supported)
    assert autocast_dtype(precision, CUDA) is dtype
    assert autocast_dtype(Precision(precision), CUDA) is dtype
    assert use_tf32(precision, CUDA) is tf32


def test_bf16_on_a_gpu_without_bf16_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(UserError, match=r"trainer.precision: bf16 .* valid: auto, fp32"):
        autocast_dtype("bf16", CUDA)


def test_precision_choices_on_cpu():
    assert autocast_dtype("auto", CPU) is None and autocast_dtype("fp32", CPU) is None
    assert autocast_dtype("bf16", CPU) is torch.bfloat16
    assert not any(use_tf32(p, CPU) for p in ("auto", "fp32", "bf16"))


def test_fused_adam_on_cuda_and_cpu_and_the_fused_optimizer_steps():
    adamw, sgd = OptimizerConfig(name=OptimizerName.adamw), OptimizerConfig(name=OptimizerName.sgd)
    assert fused_optimizer(adamw, CUDA) and fused_optimizer(OptimizerConfig(name=OptimizerName.adam), CUDA)
    assert fused_optimizer(adamw, CPU) and not fused_optimizer(sgd, CUDA) and not fused_optimizer(sgd, CPU)
    assert not fused_optimizer(adamw, torch.device("meta"))
    model = nn.Linear(3, 2)
    optimizer = make_optimizer(model, adamw, fused=True)  # torch's fused AdamW also runs on CPU: same call
    assert all(group["fused"] for group in optimizer.param_groups)
    before = model.weight.detach().clone()
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    assert not torch.equal(before, model.weight)
    assert not make_optimizer(model, adamw).param_groups[0]["fused"]


# ---------------------------------------------------------------------------------------------------------------
# Bad values, through the command line


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("trainer.precision=fp16", ["trainer.precision", "'fp16'", "auto, fp32, bf16"]),
        ("trainer.compile=maybe", ["trainer.compile", "true or false"]),
        ("trainer.dist_timeout_s=0", ["trainer.dist_timeout_s", ">= 1"]),
    ],
)
def test_bad_speed_options_fail_with_exit_2_and_one_line(tmp_path, arg, expected):
    proc = run_cli("model=tiny", arg, f"output_root={tmp_path}", timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in expected:
        assert needle in lines[0], lines[0]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


def test_peak_rss_is_per_run_after_a_reset_where_the_heap_cannot_be_sampled(monkeypatch):
    """The fallback (no glibc mallinfo2): the RSS high-water mark, reset before each run."""
    from ptexp import devices

    monkeypatch.setattr(devices.HEAP, "mallinfo2", None)
    before = devices.peak_memory_mb(CPU)
    big = torch.ones(64 * 2**20, dtype=torch.float32)  # 256 MiB, touched
    big_peak = devices.peak_memory_mb(CPU)
    assert big_peak >= before + 200
    del big
    if not devices.reset_peak_memory(CPU):
        pytest.skip("no resettable peak RSS here (/proc/self/clear_refs)")
    after = devices.peak_memory_mb(CPU)
    assert after < big_peak - 200
    small = torch.ones(16 * 2**20, dtype=torch.float32)  # 64 MiB
    assert devices.peak_memory_mb(CPU) >= after + 50
    del small


def test_the_heap_sampler_keeps_a_peak_that_was_freed_before_the_read_and_a_reset_forgets_it():
    from ptexp.devices import HEAP, peak_memory_mb, reset_peak_memory

    if not HEAP.available:
        pytest.skip("no glibc mallinfo2 here")
    assert reset_peak_memory(CPU)
    start = HEAP.in_use() / 2**20
    big = torch.ones(64 * 2**20, dtype=torch.float32)  # 256 MiB
    time.sleep(10 * HEAP.interval_s)  # the sampler sees it...
    del big  # ...and it is gone before the read
    big_peak = peak_memory_mb(CPU)
    assert big_peak >= start + 250
    assert HEAP.thread is None  # the read ended the measurement
    assert reset_peak_memory(CPU)
    small = torch.ones(16 * 2**20, dtype=torch.float32)  # 64 MiB
    small_peak = peak_memory_mb(CPU)
    assert start + 60 <= small_peak < big_peak - 150
    del small


def test_in_a_sequential_sweep_each_run_reports_its_own_peak_memory(tmp_path):
    """prefix, full, prefix in one process, the way Hydra's basic launcher runs a sweep's jobs: prefix reports less
    than full in either order, and the same after full as before it. (The RSS high-water mark, reset before each
    run, gave prefix 540, full 572, prefix 574 MB here: the heap full left behind counted in the later run.)"""
    from ptexp.devices import HEAP

    if not HEAP.available:
        pytest.skip("no glibc mallinfo2 here")
    model = [f"model.config_overrides.{k}={v}" for k, v in (("hidden_size", 128), ("intermediate_size", 256))]
    peaks = []
    for index, method in enumerate(["prefix", "full", "prefix"]):
        overrides = [*TINY, *model, f"method={method}", "trainer.max_steps=2", "tracking.enabled=false"]
        cfg = make_config(*overrides, output_root=tmp_path / "outputs")
        result = run_experiment(cfg, tmp_path / f"{index}_{method}", in_sweep=True)
        peaks.append(result["memory/peak_mb"])
    first, full, after_full = peaks
    assert first < full - 30 and after_full < full - 30, peaks  # full adds gradients and AdamW's states (~47 MB)
    assert abs(after_full - first) <= 0.03 * first, peaks

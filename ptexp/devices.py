"""Devices and precision: which device a run uses, autocast and TF32, fused Adam(W), peak memory."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import re
import resource
import threading
from pathlib import Path

import torch

from ptexp.config import OptimizerConfig, OptimizerName, Precision
from ptexp.errors import UserError


def pick_device(name: str, local_rank: int | None = None) -> torch.device:
    """The device ``trainer.device`` names; under torchrun (``local_rank`` given) a CUDA device is this process's
    GPU, ``cuda:LOCAL_RANK``."""
    if name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(name)
        except RuntimeError:
            raise UserError(f"trainer.device: {name!r} is not a device; valid: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("trainer.device: cuda asked for, but no CUDA device is available; valid: auto, cpu")
    if local_rank is None or device.type != "cuda":
        return device
    if device.index is not None:
        raise UserError(
            f"trainer.device: {name!r} names one GPU, but torchrun starts a process per GPU; valid: auto or cuda "
            "(each process takes the GPU of its LOCAL_RANK), or cpu"
        )
    if local_rank >= torch.cuda.device_count():
        raise UserError(
            f"trainer.device: torchrun started local rank {local_rank}, but this machine has "
            f"{torch.cuda.device_count()} GPU(s); valid: --nproc_per_node <= {torch.cuda.device_count()}, or cpu"
        )
    return torch.device("cuda", local_rank)


def autocast_dtype(precision: Precision | str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype ``trainer.precision`` asks for on ``device`` (None: plain fp32)."""
    name = Precision(precision)
    bf16_ok = device.type != "cuda" or torch.cuda.is_bf16_supported()
    if name == Precision.bf16 and not bf16_ok:
        raise UserError(f"trainer.precision: bf16 asked for, but {device} does not support it; valid: auto, fp32")
    if name == Precision.bf16 or (name == Precision.auto and device.type == "cuda" and bf16_ok):
        return torch.bfloat16
    return None


def use_tf32(precision: Precision | str, device: torch.device) -> bool:
    """TF32 matmuls for what runs in fp32 on CUDA, unless ``trainer.precision=fp32`` asks for plain fp32."""
    return device.type == "cuda" and Precision(precision) != Precision.fp32


def fused_optimizer(cfg: OptimizerConfig, device: torch.device) -> bool:
    """Adam(W) with ``fused=True`` on CUDA and CPU: one kernel for the whole update (on CPU, measured by
    benchmarks/optimizer_step.py, about 10x faster per step than torch's default on MiniLM; HF Trainer's default)."""
    return device.type in ("cuda", "cpu") and cfg.name in (OptimizerName.adamw, OptimizerName.adam)


def wants_fast_dropout(setting: bool | None, device: torch.device) -> bool:
    """``trainer.fast_dropout``: null (auto) means on for CPU runs, where torch's per-element dropout is slow."""
    return device.type == "cpu" if setting is None else bool(setting)


def autocast(dtype: torch.dtype | None, device: torch.device):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


STATUS, CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


MALLINFO2 = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (glibc >= 2.33): ``MALLINFO2``'s fields, each a size_t."""

    _fields_ = [(name, ctypes.c_size_t) for name in MALLINFO2]


class HeapSampler:
    """The peak of the bytes glibc's malloc has handed out and not yet taken back (``mallinfo2``: in-use chunks plus
    mmapped ones), sampled every ``interval_s`` by a daemon thread from :meth:`start` until :meth:`stop`.

    Why not the RSS high-water mark: in a sequential sweep the earlier runs leave the heap with holes (freed, and
    after ``malloc_trim`` no longer resident); a later run's allocations land in them and stay resident after they
    are freed, so its RSS peak grows by memory it no longer holds (measured: prefix after full ~12% above prefix
    alone). The bytes in use do not depend on what ran before. On CPU, torch's tensors are malloc'd, so this counts
    weights, gradients, optimizer states and activations, like CUDA's peak allocated bytes; not counted: library
    code and Python's small-object arenas (mmapped by Python itself), which every method shares. A sample costs
    about 0.1 ms (20 ms apart: ~0.5% of a core). A peak shorter than the interval can be missed; on CPU a step's
    activations live far longer, and MiniLM's peaks sampled every 20 ms and every 2 ms agreed within 1.5%."""

    def __init__(self, interval_s: float = 0.02):
        libc = ctypes.CDLL(None)
        self.mallinfo2 = getattr(libc, "mallinfo2", None)
        if self.mallinfo2 is not None:
            self.mallinfo2.restype = _MallInfo2
        self.interval_s, self.peak, self.measuring = interval_s, 0, False
        self.done = threading.Event()
        self.thread: threading.Thread | None = None

    @property
    def available(self) -> bool:
        return self.mallinfo2 is not None

    def in_use(self) -> int:
        info = self.mallinfo2()
        return info.uordblks + info.hblkhd

    def sample(self) -> int:
        self.peak = max(self.peak, self.in_use())
        return self.peak

    def start(self) -> None:
        self.stop()
        self.peak, self.measuring, self.done = self.in_use(), True, threading.Event()
        self.thread = threading.Thread(target=self._run, name="ptexp-heap-sampler", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(self.interval_s):
            self.sample()

    def stop(self) -> None:
        if self.thread is not None:
            self.done.set()
            self.thread.join()
            self.thread = None


HEAP = HeapSampler()


def release_freed_memory() -> None:
    """Collect Python's garbage (a finished run's model sits in reference cycles) and hand the heap's free pages
    back to the OS (glibc's ``malloc_trim``; a no-op elsewhere), so that a run starts from what is really held."""
    gc.collect()
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)


def reset_peak_memory(device: torch.device) -> bool:
    """Start a new peak-memory measurement, so that :func:`peak_memory_mb` reports this run's peak and not the
    largest of a sequential sweep so far. CUDA: torch's peak statistics. CPU: the freed memory is released
    (:func:`release_freed_memory`), then with glibc the heap's bytes in use are sampled (:class:`HeapSampler`);
    elsewhere on Linux, writing "5" to /proc/self/clear_refs resets the process's RSS high-water mark (VmHWM).
    Returns False where nothing could be reset (the peak then stays the process's since it started)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    release_freed_memory()
    if HEAP.available:
        HEAP.start()
        return True
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _vm_hwm_kib() is not None


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory in MiB since the last :func:`reset_peak_memory` (or the process start): CUDA's peak allocated
    bytes; on CPU the heap's peak bytes in use where :class:`HeapSampler` runs (it stops here), else the process's
    peak RSS (VmHWM; ``getrusage``'s ru_maxrss where /proc is missing)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if HEAP.available and HEAP.measuring:
        HEAP.stop()
        return HEAP.sample() / 2**20
    kib = _vm_hwm_kib()
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB (never reset)
    return kib / 1024


def _vm_hwm_kib() -> int | None:
    try:
        match = re.search(r"^VmHWM:\s+(\d+) kB", STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def split_batch(
    batch: dict[str, torch.Tensor], device: torch.device, non_blocking: bool = False
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """A collated batch on ``device``, as (the model's keyword inputs: everything but ``labels``, the labels)."""
    batch = {k: v.to(device, non_blocking=non_blocking) for k, v in batch.items()}
    labels = batch.pop("labels")
    return batch, labels

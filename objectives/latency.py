"""Latency: wall time of one forward pass, measured, never estimated.

Fixed thread count, warm-up runs, then `repeats` timed runs; the median is the
objective and p90 is kept beside it. `exclusive()` holds a per-node file lock so two
measurements on one machine never overlap each other, and training on that node
calls `wait_for_measurements()` between batches, so it pauses while a measurement
runs instead of skewing it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from objectives._measurement import Measurement

LOCK_PATH = Path(tempfile.gettempdir()) / "paretune-measure.lock"


@contextlib.contextmanager
def exclusive(lock_path: Path | None = None):
    """One measurement at a time on this node (all trials on a node share /tmp)."""
    with open(lock_path or LOCK_PATH, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_shared_handles: dict[Path, object] = {}


def wait_for_measurements(lock_path: Path | None = None) -> None:
    """Block while a measurement on this node holds `exclusive()`; return at once
    otherwise. A shared lock taken and dropped: a couple of syscalls per batch."""
    lock_path = lock_path or LOCK_PATH
    handle = _shared_handles.get(lock_path)
    if handle is None:
        handle = _shared_handles[lock_path] = open(lock_path, "a+")
    fcntl.flock(handle, fcntl.LOCK_SH)
    fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def torch_threads(threads: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def time_forward_ms(model: nn.Module, example: torch.Tensor, warmup: int, repeats: int) -> list[float]:
    """Wall time of each of `repeats` forward passes after `warmup` ones. On CUDA each
    pass is synchronized, so a time is the kernels' completion, not their launch."""
    model.eval()
    sync = torch.cuda.synchronize if example.is_cuda else (lambda: None)
    timings = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(example)
        sync()
        for _ in range(repeats):
            start = time.perf_counter_ns()
            model(example)
            sync()
            timings.append((time.perf_counter_ns() - start) / 1e6)
    return timings


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def measure(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    threads: int = 1,
    batch_size: int = 1,
    warmup: int = 20,
    repeats: int = 100,
    device: str = "cpu",
) -> Measurement:
    example = torch.rand(batch_size, *input_shape, device=device)
    with torch_threads(threads):
        timings = time_forward_ms(model, example, warmup, repeats)
    median = statistics.median(timings)
    return Measurement(
        median,
        "ms",
        "wall-clock",
        {
            "p90_ms": percentile(timings, 0.9),
            "min_ms": min(timings),
            "repeats": repeats,
            "threads": threads,
            "batch_size": batch_size,
            "device": str(device),
            "pid": os.getpid(),
        },
    )

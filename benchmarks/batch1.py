"""Batch-1 latency of one trained model on every runtime and precision a trial can
ship, with the machine's peak beside it (a section of the compression benchmark).

Each variant is built by the same functions a trial uses (`spaces.quantization.apply`,
`spaces.runtime.apply`) from one trained float model, then all are timed in
interleaved rounds (round r times every variant once: median of `repeats` calls after
warm-up, one thread, under the per-node measurement lock); a variant's latency is the
median over rounds, its spread (max - min) / median over rounds, and each speed-up
the median over rounds of that round's ratio (paired, as in the stability
benchmark), so the shared machine's drifts between rounds cancel.
"""

from __future__ import annotations

import copy
import io
import statistics

import torch
from torch import nn

# (runtime, precision, quantization mode)
VARIANTS = (
    ("eager", "fp32", "none"),
    ("torchscript", "fp32", "none"),
    ("onnxruntime", "fp32", "none"),
    ("eager", "int8 static", "static"),
    ("torchscript", "int8 static", "static"),
    ("onnxruntime", "int8 static", "static"),
    ("torchscript", "int8 dynamic", "dynamic"),
    ("onnxruntime", "int8 dynamic", "dynamic"),
)
COLUMNS = ["model", "runtime", "precision", "latency b1 ms", "spread %", "× eager fp32", "× same-runtime fp32",
           "GMAC/s", "% of peak", "int8 kernels", "test accuracy %", "size KB"]


def shipped_kb(runner: nn.Module, model: nn.Module) -> float:
    """Size of what ships: the ONNX model, the saved TorchScript, or the state dict."""
    from objectives import complexity
    from spaces.runtime import artifact_kb

    size = artifact_kb(runner)
    if size is not None:
        return size
    if isinstance(runner, torch.jit.ScriptModule):
        buffer = io.BytesIO()
        torch.jit.save(runner, buffer)
        return buffer.getbuffer().nbytes / 1024
    return complexity.size_kb(model)


def build(float_model: nn.Module, example: torch.Tensor, calibration: list[torch.Tensor]) -> dict[tuple, tuple[nn.Module, nn.Module]]:
    """(runner, torch model) of every variant, as the compress and deploy stages of a trial build them."""
    from spaces import quantization, runtime

    float_model = float_model.cpu().eval()
    quantized = {mode: quantization.apply(copy.deepcopy(float_model), mode, example, calibration)
                 for mode in ("static", "dynamic")}
    runners = {}
    for name, precision, mode in VARIANTS:
        model = quantized.get(mode, float_model)
        runners[(name, precision)] = (runtime.apply({"runtime": name, "quant_mode": mode}, model, float_model, example,
                                                    calibration=calibration), model)
    return runners


def time_interleaved(runners: dict, input_shape: tuple, rounds: int, repeats: int) -> dict[tuple, list[float]]:
    """Each runner's batch-1 latency in ms, one value per interleaved round."""
    from objectives import latency

    per_round: dict[tuple, list[float]] = {key: [] for key in runners}
    with latency.exclusive(), latency.torch_threads(1):
        for _ in range(rounds):
            for key, (runner, _) in runners.items():
                per_round[key].append(latency.measure(runner, input_shape, threads=1, batch_size=1, warmup=20,
                                                      repeats=repeats).value)
    return per_round


def paired_speedup(base: list[float], other: list[float]) -> float:
    """Median over rounds of base / other, each ratio within one round."""
    return statistics.median(b / o for b, o in zip(base, other))


def rows(label: str, float_model: nn.Module, task, peaks: dict[str, float], rounds: int, repeats: int) -> list[list]:
    from objectives import accuracy, complexity
    from search.tasks.task import calibration_batches, example_inputs, loader
    from spaces.runtime import int8_kernels

    example = example_inputs(task.train)
    macs = sum(complexity.count_macs(float_model, example).values())
    runners = build(float_model, example, calibration_batches(task, 8, seed=0))
    timed = time_interleaved(runners, task.input_shape, rounds, repeats)
    test = loader(task.test, 512)
    out = []
    for (name, precision), (runner, model) in runners.items():
        rounds_ms = timed[(name, precision)]
        ms = statistics.median(rounds_ms)
        gmacs = macs / (ms * 1e6)
        peak = peaks["int8" if precision.startswith("int8") else "fp32"]
        out.append([
            f"{label} ({macs / 1e6:.2f} M MACs)", name, precision, ms, 100 * (max(rounds_ms) - min(rounds_ms)) / ms,
            paired_speedup(timed[("eager", "fp32")], rounds_ms), paired_speedup(timed[(name, "fp32")], rounds_ms),
            gmacs, 100 * gmacs / peak, int8_kernels(runner), 100 * accuracy.measure(runner, test).value,
            shipped_kb(runner, model),
        ])
    return out

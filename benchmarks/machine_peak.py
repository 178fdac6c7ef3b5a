"""The machine's measured compute peak on one thread, beside which a model's achieved
MAC throughput (`TrialMetrics.gmac_per_s`) is read.

A large square matmul (512³ MACs) in each arithmetic a deployed model can use, timed
like a model (warm-up, then the median of timed calls), in interleaved rounds so the
shared machine's drifts hit every kernel alike:

- fp32: `torch.mm` (oneDNN/MKL sgemm);
- int8: `torch._int_mm` (s8×s8→s32, oneDNN; VNNI where the CPU has it);
- int8 ONNX Runtime: one `MatMulInteger` node (u8×s8→s32, MLAS), the kernel family
  ONNX Runtime's int8 convolutions and matmuls run on.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

SIZE = 512


def _ort_matmul_integer(size: int) -> Callable[[], object]:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.integers(-128, 128, (size, size), dtype=np.int8), "B")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "peak",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [size, size])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [size, size])], [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    activations = rng.integers(0, 256, (size, size), dtype=np.uint8)
    return lambda: session.run(None, {"A": activations})


def kernels(size: int = SIZE) -> dict[str, Callable[[], object]]:
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(size, size, generator=generator), torch.randn(size, size, generator=generator)
    a8 = torch.randint(-128, 128, (size, size), dtype=torch.int8, generator=generator)
    b8 = torch.randint(-128, 128, (size, size), dtype=torch.int8, generator=generator)
    return {
        "fp32 torch.mm": lambda: torch.mm(a, b),
        "int8 torch._int_mm": lambda: torch._int_mm(a8, b8),
        "int8 ONNX Runtime MatMulInteger": _ort_matmul_integer(size),
    }


def _median_seconds(call: Callable[[], object], calls: int) -> float:
    for _ in range(3):
        call()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(rounds: int = 3, calls: int = 20, size: int = SIZE) -> dict[str, dict[str, float]]:
    """GMAC/s per kernel on one thread: the median over `rounds` interleaved rounds of
    each round's median call, and the rounds' spread ((max - min) / median)."""
    from objectives import latency

    runs = kernels(size)
    per_round: dict[str, list[float]] = {name: [] for name in runs}
    with latency.exclusive(), latency.torch_threads(1):
        for _ in range(rounds):
            for name, call in runs.items():
                per_round[name].append(size**3 / _median_seconds(call, calls) / 1e9)
    return {
        name: {"gmac_per_s": statistics.median(values),
               "spread": (max(values) - min(values)) / statistics.median(values)}
        for name, values in per_round.items()
    }


def peaks(measured: dict[str, dict[str, float]]) -> dict[str, float]:
    """The peak each precision is read against: fp32 from torch.mm, int8 the faster of
    the two int8 kernels."""
    int8 = max(v["gmac_per_s"] for k, v in measured.items() if k.startswith("int8"))
    return {"fp32": measured["fp32 torch.mm"]["gmac_per_s"], "int8": int8}

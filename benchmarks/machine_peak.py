"""The machine's measured compute peak on one thread, beside which a model's achieved
MAC throughput (`TrialMetrics.gmac_per_s`) is read.

A large square matmul (512³ MACs) in each arithmetic a deployed model can use, timed
like a model (warm-up, then the median of timed calls), in interleaved rounds so the
shared machine's drifts hit every kernel alike:

- fp32: `torch.mm` (oneDNN/MKL sgemm) and one ONNX Runtime `MatMul` node (MLAS sgemm,
  the kernel family ONNX Runtime's float convolutions run on);
- int8: `torch._int_mm` (s8×s8→s32, oneDNN; VNNI where the CPU has it) and one ONNX
  Runtime `MatMulInteger` node (u8×s8→s32, MLAS), the kernels ONNX Runtime's int8
  convolutions and matmuls run on.

A precision's peak is the faster of its two kernels.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

SIZE = 512


def _ort_matmul(size: int, integer: bool) -> Callable[[], object]:
    """One ONNX Runtime matmul node, `size`³ MACs: MatMulInteger (u8 × s8 → s32) or MatMul (fp32)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if integer:
        weight = rng.integers(-128, 128, (size, size), dtype=np.int8)
        activations = rng.integers(0, 256, (size, size), dtype=np.uint8)
        op, types = "MatMulInteger", (TensorProto.UINT8, TensorProto.INT32)
    else:
        weight = rng.standard_normal((size, size), dtype=np.float32)
        activations = rng.standard_normal((size, size), dtype=np.float32)
        op, types = "MatMul", (TensorProto.FLOAT, TensorProto.FLOAT)
    graph = helper.make_graph(
        [helper.make_node(op, ["A", "B"], ["Y"])], "peak",
        [helper.make_tensor_value_info("A", types[0], [size, size])],
        [helper.make_tensor_value_info("Y", types[1], [size, size])], [numpy_helper.from_array(weight, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"A": activations})


def kernels(size: int = SIZE) -> dict[str, Callable[[], object]]:
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(size, size, generator=generator), torch.randn(size, size, generator=generator)
    a8 = torch.randint(-128, 128, (size, size), dtype=torch.int8, generator=generator)
    b8 = torch.randint(-128, 128, (size, size), dtype=torch.int8, generator=generator)
    return {
        "fp32 torch.mm": lambda: torch.mm(a, b),
        "fp32 ONNX Runtime MatMul": _ort_matmul(size, integer=False),
        "int8 torch._int_mm": lambda: torch._int_mm(a8, b8),
        "int8 ONNX Runtime MatMulInteger": _ort_matmul(size, integer=True),
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
    """The peak each precision is read against: the faster of its kernels."""
    return {precision: max(v["gmac_per_s"] for k, v in measured.items() if k.startswith(precision))
            for precision in ("fp32", "int8")}

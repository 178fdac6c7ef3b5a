"""Inference-runtime dimension: the form a trial ships in, measured as shipped.

Latency, energy and accuracy of every trial are measured on the artifact `paretune
train` ships for it, so the front reads what a user deploys. The dimension is on by
default and searches the runtimes that win at batch 1 on CPU: frozen TorchScript and
ONNX Runtime (3-25x faster than eager PyTorch on small models, where eager mostly
measures framework overhead). Eager PyTorch is a choice a user adds to `runtimes`,
never a silent default; `enabled = false` measures the eager model and ships
TorchScript, which the model card then says.

- "torchscript": `torch.jit.trace`, then `torch.jit.freeze` (int8 models included:
  freezing is what lets FX int8 run its `quantized::` kernels without Python); with
  `space.runtime.torchscript_optimize` also `torch.jit.optimize_for_inference` (float
  models only; off by default: its MKLDNN layout conversions cost more than they save
  on small models, and on conv models its saved file can fail to load, which
  `paretune train` checks before shipping it).
- "onnxruntime": the float model exported to ONNX (opset from the spec, dynamic batch
  axis), run by an ONNX Runtime CPU session with all graph optimizations and
  `measure.threads` intra-op threads. Where the trial quantizes, ONNX Runtime
  quantizes the float export itself: "dynamic" with `quantize_dynamic` (int8 weights
  of MatMul, i.e. the linear layers, as torch's dynamic mode does), "static" with
  `quantize_static` (QDQ, per-channel int8 weights, activations calibrated on training
  batches; the session fuses it into QLinearConv/QGemm kernels). A QAT model has no
  ONNX Runtime form here, so QAT trials never draw it.
- "eager": the torch model as it is (int8 where quantized).

Each (runtime, precision) pair is measured, never assumed: int8 pays at batch 1 only
where dense arithmetic dominates (convolutions), and loses on MLPs and depthwise nets,
so the front keeps fp32 where int8 is slower. `int8_kernels(runner)` counts the int8
kernels in the graph the runtime actually executes (after freezing / graph
optimization), recorded with every trial.

`apply` returns an `nn.Module` that takes and returns torch tensors, so the latency,
energy and accuracy measures run it like any model. A model that cannot be brought to
its runtime raises `RuntimeUnavailable`, and the trial fails with that reason; there
is no silent fallback to eager. The preflight finds such models before a search
starts; with `--drop-unsupported` a model no shipped runtime can take is searched on
eager, and the launch says so.
"""

from __future__ import annotations

import contextlib
import copy
import io
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field

from spaces._config import Strict, choices, suggest_choice
from spaces._lazy import nn, torch
from spaces.dimension import Check, Dimension, Fact, SuggestContext, TrialContext, first_line, register
from spaces.quantization import MODES as QUANT_MODES
from spaces.quantization import is_quantized

if TYPE_CHECKING:
    from spaces._ort import OrtModule

# Searched by default: the runtimes `paretune train` ships (model.pt, model.onnx).
DEFAULT_RUNTIMES = ["torchscript", "onnxruntime"]


class RuntimeSpace(Strict):
    """The inference runtime latency and energy are measured on (and shipped in)."""

    enabled: bool = True
    runtimes: list[Literal["eager", "torchscript", "onnxruntime"]] = choices("runtime", list(DEFAULT_RUNTIMES))
    opset: int = Field(default=17, ge=13, le=21)  # ONNX opset for the onnxruntime export
    # Also run torch.jit.optimize_for_inference after freezing (float models).
    torchscript_optimize: bool = False


class RuntimeUnavailable(RuntimeError):
    """The trial's model cannot be brought to the runtime it chose."""


class TraceUnsafe(RuntimeUnavailable):
    """Tracing worked but recorded one path through data-dependent control flow: the
    traced model would be wrong for other inputs."""


# --- TorchScript -----------------------------------------------------------------------


def to_torchscript(model: nn.Module, example: torch.Tensor, optimize: bool = False) -> torch.jit.ScriptModule:
    """Trace and freeze; `optimize` adds `torch.jit.optimize_for_inference` (float
    models only: it rewrites float conv/linear for MKLDNN)."""
    optimize = optimize and not is_quantized(model)
    model = model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python control flow (preflight checks them)
            traced = torch.jit.trace(model, example, check_trace=False)
            frozen = torch.jit.freeze(traced)
            if optimize:
                frozen = torch.jit.optimize_for_inference(frozen)
    except Exception as exc:  # noqa: BLE001 - re-raised with the runtime's name
        raise RuntimeUnavailable(f"runtime torchscript: cannot trace the {type(model).__name__} model: {first_line(exc)}") from exc
    return frozen


# --- ONNX Runtime ----------------------------------------------------------------------


@contextlib.contextmanager
def _plain_attention():
    """The fused transformer fast path has no ONNX form: export the plain ops."""
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


def export_onnx(model: nn.Module, example: torch.Tensor, opset: int = 17) -> bytes:
    """ONNX bytes of a float model, batch axis dynamic (the legacy TorchScript-based
    exporter: it needs no packages beyond onnx)."""
    buffer = io.BytesIO()
    try:
        with torch.no_grad(), _plain_attention(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model.eval(),
                (example,),
                buffer,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
    except Exception as exc:  # noqa: BLE001
        raise RuntimeUnavailable(f"runtime onnxruntime: cannot export the {type(model).__name__} model to ONNX: {first_line(exc)}") from exc
    return buffer.getvalue()


def gemm_to_matmul(model_bytes: bytes) -> bytes:
    """Rewrite Gemm(A, W, b) with a constant W as MatMul(A, Wᵀ) + b.

    The exporter writes a Linear on 2-D input as Gemm, which ONNX Runtime's dynamic
    quantization does not cover (it quantizes MatMul); after the rewrite every linear
    layer is a MatMul and gets int8 weights, as with torch's dynamic mode."""
    import onnx
    from onnx import helper, numpy_helper

    graph_model = onnx.load_from_string(model_bytes)
    graph = graph_model.graph
    weights = {init.name: init for init in graph.initializer}
    nodes = []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        if node.op_type != "Gemm" or not plain or node.input[1] not in weights:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(weights[node.input[1]])
        if attrs.get("transB", 0):
            weight = weight.T
        name = f"{node.input[1]}_matmul"
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), name))
        has_bias = len(node.input) > 2 and node.input[2]
        product = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], name], [product], name=f"{node.name}_matmul"))
        if has_bias:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}_bias"))
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.checker.check_model(graph_model)
    return graph_model.SerializeToString()


def _calibration_reader(batches: list[torch.Tensor], input_name: str = "input"):
    """An onnxruntime.quantization.CalibrationDataReader over training batches."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = [{input_name: b.detach().cpu().numpy().astype(np.float32)} for b in batches]
            self.position = 0

        def get_next(self):
            if self.position >= len(self.feeds):
                return None
            self.position += 1
            return self.feeds[self.position - 1]

        def rewind(self) -> None:
            self.position = 0

    return Reader()


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime.quantization advises through the root logger; keep it to errors."""
    import logging

    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(previous)


def _preprocess(source: Path, target: Path) -> Path:
    """ONNX Runtime's recommended pre-quantization pass (shape inference, graph
    optimization such as folding batch norm); the raw export where it does not apply."""
    from onnxruntime.quantization import quant_pre_process

    try:
        quant_pre_process(source, target)
    except Exception:  # noqa: BLE001 - an optimization pass only; the export itself is valid
        return source
    return target


def _ort_dynamic(source: Path, target: Path, tmp: Path, model_bytes: bytes, calibration: Iterable[torch.Tensor]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source.write_bytes(gemm_to_matmul(model_bytes))
    quantize_dynamic(_preprocess(source, tmp / "pre.onnx"), target, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])


def _ort_static(source: Path, target: Path, tmp: Path, model_bytes: bytes, calibration: Iterable[torch.Tensor]) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    batches = list(calibration)
    if not batches:
        raise ValueError("static quantization needs calibration batches")
    source.write_bytes(model_bytes)
    quantize_static(
        _preprocess(source, tmp / "pre.onnx"),
        target,
        _calibration_reader(batches),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )


# Quantization mode -> ONNX Runtime's own int8 quantization of the float export.
ORT_QUANTIZERS = {"dynamic": _ort_dynamic, "static": _ort_static}


def quantize_onnx(model_bytes: bytes, mode: str, calibration: Iterable[torch.Tensor] = ()) -> bytes:
    """ONNX Runtime's own int8 quantization of a float ONNX model."""
    with tempfile.TemporaryDirectory(prefix="paretune-ort-") as tmp, _quiet_root_logger():
        tmp = Path(tmp)
        source, target = tmp / "float.onnx", tmp / "int8.onnx"
        try:
            if mode not in ORT_QUANTIZERS:
                raise ValueError(f"no ONNX Runtime quantization for mode {mode!r}")
            ORT_QUANTIZERS[mode](source, target, tmp, model_bytes, calibration)
        except Exception as exc:  # noqa: BLE001
            raise RuntimeUnavailable(f"runtime onnxruntime: {mode} int8 quantization failed: {first_line(exc)}") from exc
        return target.read_bytes()


def ort_module(model_bytes: bytes, threads: int = 1, quant_mode: str = "none") -> OrtModule:
    """An ONNX Runtime session over `model_bytes`, as a torch module."""
    from spaces import _ort  # deferred: it subclasses nn.Module (torch)

    try:
        return _ort.OrtModule(model_bytes, threads, quant_mode)
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's own errors, said in one line
        raise RuntimeUnavailable(f"runtime onnxruntime: cannot load the exported model: {first_line(exc)}") from exc


def is_ort(runner: nn.Module) -> bool:
    from spaces import _ort  # deferred: it subclasses nn.Module (torch)

    return isinstance(runner, _ort.OrtModule)


def to_onnxruntime(
    float_model: nn.Module,
    example: torch.Tensor,
    *,
    quant_mode: str = "none",
    threads: int = 1,
    calibration: Iterable[torch.Tensor] = (),
    opset: int = 17,
) -> OrtModule:
    if quant_mode not in ("none", *ORT_QUANTIZERS):
        raise RuntimeUnavailable("runtime onnxruntime: a QAT model has no ONNX Runtime form here; use eager or torchscript")
    return onnxruntime_from_export(export_onnx(float_model, example, opset), quant_mode=quant_mode, threads=threads, calibration=calibration)


def onnxruntime_from_export(
    model_bytes: bytes, *, quant_mode: str = "none", threads: int = 1, calibration: Iterable[torch.Tensor] = ()
) -> OrtModule:
    """An exported float model in ONNX Runtime, quantized by ONNX Runtime's own int8 where
    `quant_mode` is one of ORT_QUANTIZERS (one export can serve every mode)."""
    if quant_mode in ORT_QUANTIZERS:
        model_bytes = quantize_onnx(model_bytes, quant_mode, calibration)
    return ort_module(model_bytes, threads, quant_mode)


# --- the dimension ----------------------------------------------------------------------


@dataclass(frozen=True)
class Runner:
    """One runtime: `deploy(model, float_model, example, options)` brings the trial's
    model to it (`model`: the deployable torch model, int8 where quantized;
    `float_model`: the same before quantization; `options`: quant_mode, threads,
    calibration, opset, optimize); `quant_modes`: the quantization modes it can run
    (None: every one)."""

    deploy: Callable[[nn.Module, nn.Module, torch.Tensor, dict], nn.Module]
    quant_modes: tuple[str, ...] | None = None

    def takes(self, quant_mode: str) -> bool:
        return self.quant_modes is None or quant_mode in self.quant_modes


# Runtime name -> its handler: the one place a runtime is defined.
RUNNERS: dict[str, Runner] = {
    "eager": Runner(lambda model, float_model, example, options: model.eval()),
    "torchscript": Runner(lambda model, float_model, example, options: to_torchscript(
        model, example, optimize=options.get("optimize", False))),
    "onnxruntime": Runner(
        lambda model, float_model, example, options: to_onnxruntime(
            float_model, example, quant_mode=options.get("quant_mode", "none"), threads=options.get("threads", 1),
            calibration=options.get("calibration", ()), opset=options.get("opset", 17)),
        quant_modes=("none", *ORT_QUANTIZERS),
    ),
}
RUNTIMES = tuple(RUNNERS)
# Runtimes each quantization mode can run on (from RUNNERS); missing modes allow every runtime.
MODE_RUNTIMES = {
    mode: tuple(name for name, runner in RUNNERS.items() if runner.takes(mode))
    for mode in QUANT_MODES
    if not all(runner.takes(mode) for runner in RUNNERS.values())
}


def apply(
    params: dict,
    model: nn.Module,
    float_model: nn.Module,
    example: torch.Tensor,
    *,
    threads: int = 1,
    calibration: Iterable[torch.Tensor] = (),
    opset: int = 17,
    optimize: bool = False,
) -> nn.Module:
    """The trial's model on its runtime. `model` is the deployable torch model (int8
    where quantized), `float_model` the same before quantization (ONNX Runtime
    quantizes that one itself)."""
    name = params.get("runtime", "eager")
    runner = RUNNERS.get(name)
    if runner is None:
        raise RuntimeUnavailable(f"unknown runtime {name!r}; choose from {', '.join(RUNTIMES)}")
    options = {"quant_mode": params.get("quant_mode", "none"), "threads": threads, "calibration": calibration,
               "opset": opset, "optimize": optimize}
    return runner.deploy(model, float_model, example, options)


def check_trace(model: nn.Module, example: torch.Tensor) -> None:
    """Raise TraceUnsafe when tracing `model` meets data-dependent Python control flow
    (torch's TracerWarning "Converting a tensor to a Python boolean ...")."""
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", torch.jit.TracerWarning)
        torch.jit.trace(model.eval(), example, check_trace=False)
    for warning in caught:
        text = str(warning.message)
        if issubclass(warning.category, torch.jit.TracerWarning) and ("Python boolean" in text or "Python value" in text or "Python index" in text):
            raise TraceUnsafe(f"data-dependent control flow: {text.splitlines()[0][:200]}")


KEY = "space.runtime.runtimes"
ONNX_FILE = "model.onnx"  # what `paretune train` ships for an ONNX Runtime trial


class Runtime(Dimension):
    name = "runtime"
    config = RuntimeSpace
    stage = "deploy"
    order = 80
    in_baseline = False
    after_training = True
    # int8_kernels: int8 kernels in the graph the runtime executes (after freezing /
    # graph optimization); 0 means the deployed model computes in float.
    facts = {"runtime": Fact(card=True, untrained=True, ran_on=True), "int8_kernels": Fact(card=True)}
    aliases = {"runtime": tuple(f"runtime_{mode}" for mode in MODE_RUNTIMES)}

    def suggest(self, trial, config: RuntimeSpace, ctx: SuggestContext) -> dict:
        if not config.enabled:
            return {}
        quant_mode = ctx.params.get("quant_mode", "none")
        allowed = MODE_RUNTIMES.get(quant_mode)
        if allowed is None:
            return {"runtime": suggest_choice(trial, "runtime", config.runtimes)}
        # Another parameter name: an Optuna categorical keeps one set of choices per name.
        options = [r for r in config.runtimes if r in allowed] or ["eager"]
        return {"runtime": suggest_choice(trial, f"runtime_{quant_mode}", options)}

    def apply(self, model: nn.Module, params: dict, ctx: TrialContext) -> nn.Module:
        if params.get("runtime", "eager") == "eager":
            return model
        config = ctx.settings(self)
        return apply(
            params,
            model,
            ctx.float_model if ctx.float_model is not None else model,
            ctx.example,
            threads=ctx.spec.measure.threads,
            calibration=ctx.calibration(),
            opset=config.opset,
            optimize=config.torchscript_optimize,
        )

    def preflight(self, model: nn.Module, config: RuntimeSpace, ctx: TrialContext) -> list[Check]:
        if not config.enabled:
            return []
        model = copy.deepcopy(model).cpu().eval()
        with torch.no_grad():
            expected = model(ctx.example)
        modes = [m for m in ctx.spec.space.quantization.modes if m in ORT_QUANTIZERS]
        checks = []
        for name in config.runtimes:
            if name == "eager":
                continue
            if name == "onnxruntime" and ctx.spec.measure.device == "cuda":
                checks.append(Check(self.name, name, False, "the ONNX Runtime session here runs on the CPU, but measure.device is cuda", KEY, fallback="eager"))
                continue
            try:
                check_trace(model, ctx.example)  # both runtimes trace the model (the ONNX exporter too)
                if name == "torchscript":
                    runner = to_torchscript(model, ctx.example)
                    variants = ""
                else:
                    model_bytes = export_onnx(model, ctx.example, config.opset)  # once, for every mode
                    runner = onnxruntime_from_export(model_bytes)
                    for mode in modes:  # ONNX Runtime's own int8 of the same export
                        onnxruntime_from_export(model_bytes, quant_mode=mode, calibration=ctx.calibration()[:2])
                    variants = f" (+ int8 {', '.join(modes)})" if modes else ""
                got = runner(ctx.example)
                if not torch.allclose(got, expected, rtol=1e-3, atol=1e-4):
                    raise RuntimeUnavailable(f"outputs differ from eager by {float((got - expected).abs().max()):.3g}")
                checks.append(Check(self.name, name, True, f"matches eager{variants}", KEY, fallback="eager"))
            except Exception as exc:  # noqa: BLE001 - the reason is the preflight's answer
                checks.append(Check(self.name, name, False, first_line(exc), KEY, fallback="eager"))
        return checks

    def describe(self, params: dict, config) -> str:
        # No runtime param with the dimension on: a trial left on eager PyTorch (the baseline).
        return str(self.value(params, "runtime", "eager" if config.enabled else ""))

    def record(self, model: nn.Module, runner: nn.Module, params: dict, ctx: TrialContext) -> dict:
        return {"runtime": params.get("runtime", "eager"), "int8_kernels": int8_kernels(runner)}

    def ship(self, runner: nn.Module, out_dir) -> dict | None:
        """An ONNX Runtime trial ships the very model it was measured on (`model.onnx`);
        any other trial leaves no stale `model.onnx` from an earlier run."""
        path = Path(out_dir) / ONNX_FILE
        if not is_ort(runner):
            path.unlink(missing_ok=True)
            return None
        runner.save(path)
        return {"format": "onnx", "file": ONNX_FILE}

    def load_shipped(self, path, fmt: str, threads: int = 1) -> tuple[nn.Module, str] | None:
        if fmt == "onnx":
            return ort_module(Path(path).read_bytes(), threads), "onnxruntime"
        if fmt == "torchscript":
            return torch.jit.load(str(path)), "torchscript"
        return None

    def usage(self, fmt: str) -> tuple[str, str, list[str]] | None:
        """How a user runs the ONNX model it ships: (what it is, the loading call, the
        Python lines)."""
        if fmt != "onnx":
            return None
        return ("ONNX Runtime, the runtime it was measured on", "onnxruntime.InferenceSession", [
            "import onnxruntime",
            'session = onnxruntime.InferenceSession("{file}")',
            "logits = session.run(None, {{session.get_inputs()[0].name: x}})[0]  # x: float32 numpy, shape (N, {shape}), scaled as x_model above",
        ])

    def trace_options(self, params: dict, config: RuntimeSpace) -> dict:
        """The shipped TorchScript has optimize_for_inference where the trial's had it."""
        return {"optimize": params.get("runtime") == "torchscript" and bool(config.torchscript_optimize)}


def artifact_kb(runner: nn.Module) -> float | None:
    """Size of what the runtime deploys where it is its own artifact (the ONNX model)."""
    size = getattr(runner, "size_kb", None)
    return float(size()) if callable(size) else None


# ONNX Runtime kernels that compute in int8 (QDQ fused into them, or integer ops).
ORT_INT8_OPS = ("ConvInteger", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QGemm",
                "QAttention", "DynamicQuantizeLSTM")


def executed_ops(runner: nn.Module) -> Counter:
    """What the runtime executes, by kind: ONNX Runtime's optimized graph's op types; a
    TorchScript graph's node kinds (`quantized::conv2d`, `aten::linear`, ...), nested
    blocks included; an eager model's module types."""
    if is_ort(runner):
        return runner.executed_ops()
    if isinstance(runner, torch.jit.ScriptModule):
        kinds: Counter = Counter()

        def walk(block) -> None:
            for node in block.nodes():
                kinds[node.kind()] += 1
                for inner in node.blocks():
                    walk(inner)

        walk(runner.graph)
        return kinds
    return Counter(f"{type(m).__module__}.{type(m).__name__}" for m in runner.modules() if not list(m.children()))


def is_int8_kernel(kind: str) -> bool:
    """An op kind of `executed_ops` that computes in int8."""
    if kind.startswith("quantized::"):  # TorchScript: fbgemm/onednn int8 kernels
        return not kind.startswith(("quantized::linear_prepack", "quantized::conv2d_prepack"))
    if kind.startswith("QLinear") or kind in ORT_INT8_OPS:
        return True
    name = kind.rsplit(".", 1)[-1]  # eager torch.ao int8 modules, not its (de)quantize steps
    return ".quantized" in kind and "PackedParams" not in name and name not in ("Quantize", "DeQuantize")


def int8_kernels(runner: nn.Module) -> int:
    """How many int8 kernels the deployed graph runs (0: it computes in float)."""
    return sum(count for kind, count in executed_ops(runner).items() if is_int8_kernel(kind))


register(Runtime)

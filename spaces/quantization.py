"""Quantization dimension: none, dynamic (int8 Linear weights, activations quantized
on the fly), static (post-training, calibrated on training batches) and QAT
(fake-quant fine-tuning, then conversion). Converted models run torch's int8 CPU
kernels (x86 backend: fbgemm + onednn).

torch.ao.quantization is deprecated in favour of torchao but still ships and works in
torch 2.13; its deprecation warnings are silenced here, around its calls only
(`_quiet`), nowhere else.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from spaces._config import Strict, choices, suggest_choice
from spaces._lazy import LazyModule, nn, torch
from spaces.dimension import Check, Dimension, Fact, SuggestContext, TrialContext, first_line, register


@contextlib.contextmanager
def _quiet():
    """torch.ao.quantization's deprecation and observer warnings, silenced for its calls."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"torch\.ao\.quantization.*")
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*")
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*")
        warnings.filterwarnings("ignore", message=r".*reduce_range will be deprecated.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        yield


# torch's int8 entry points, imported on first use like torch (spaces._lazy): every use
# is inside _quiet(), which then silences their import-time deprecation warnings too.
ao = LazyModule("torch.ao.quantization")
ao_fx = LazyModule("torch.ao.quantization.quantize_fx")


@contextlib.contextmanager
def _untraced_stacks():
    """FX tracing without a stack trace per node: symbolizing the first one imports
    torch._dynamo, about 2 s of CPU in the driver's preflight, which otherwise never
    needs it (prepare and convert then take 0.1 s). A trial worker has imported it
    already (torch.optim does on the first step). The traces are debugging metadata
    only: the quantized model is the same."""
    saved = torch.fx.config.do_not_emit_stack_traces
    torch.fx.config.do_not_emit_stack_traces = True
    try:
        yield
    finally:
        torch.fx.config.do_not_emit_stack_traces = saved


BACKEND = "x86"
# Attention blocks do not trace into FX static quantization; they get dynamic or none.
FAMILY_MODES = {"transformer": ("none", "dynamic")}


class QuantizationSpace(Strict):
    modes: list[Literal["none", "dynamic", "static", "qat"]] = choices("mode", ["none", "dynamic", "static", "qat"])
    calibration_batches: int = Field(default=8, ge=1, le=1000)
    qat_epochs: int = Field(default=2, ge=1, le=100)


def _engine() -> None:
    torch.backends.quantized.engine = BACKEND


def quantize_dynamic_int8(model: nn.Module) -> nn.Module:
    _engine()
    with _quiet():
        return ao.quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8)


def quantize_static(model: nn.Module, calibration: Iterable[torch.Tensor], example_input: torch.Tensor) -> nn.Module:
    _engine()
    with _quiet(), _untraced_stacks():
        prepared = ao_fx.prepare_fx(model.eval(), ao.get_default_qconfig_mapping(BACKEND), (example_input,))
        with torch.inference_mode():
            for batch in calibration:
                prepared(batch)
        return ao_fx.convert_fx(prepared)


def quantize_qat(model: nn.Module, example_input: torch.Tensor, fine_tune: Callable[[nn.Module], None]) -> nn.Module:
    """Insert fake-quant observers, fine-tune with them (`fine_tune(model)` trains in
    place), then convert to a real int8 model."""
    _engine()
    with _quiet(), _untraced_stacks():
        prepared = ao_fx.prepare_qat_fx(model.train(), ao.get_default_qat_qconfig_mapping(BACKEND), (example_input,))
    fine_tune(prepared)
    with _quiet():
        return ao_fx.convert_fx(prepared.cpu().eval())  # int8 kernels are CPU kernels


def is_quantized(model: nn.Module) -> bool:
    return any(".quantized" in type(m).__module__ for m in model.modules())


@dataclass(frozen=True)
class Mode:
    """One quantization mode: `convert(model, example, calibration, fine_tune)` turns a
    trained float model into the deployable one; `int8_kinds` are the layer kinds it
    runs in int8 (the rest stays fp32: for the energy estimate); `untrained` is the
    mode measured in its place before training (None: itself); `on_cpu`: converted on
    the CPU (torch's int8 kernels are CPU kernels)."""

    convert: Callable[[nn.Module, torch.Tensor, Iterable[torch.Tensor], Callable[[nn.Module], None]], nn.Module]
    int8_kinds: tuple[str, ...] = ()
    untrained: str | None = None
    on_cpu: bool = True


# Mode name -> its handler: the one place a mode is defined (like torchao's
# `quantize_(model, config)` dispatch on its config type).
MODES: dict[str, Mode] = {
    "none": Mode(lambda model, example, calibration, fine_tune: model.eval()),
    "dynamic": Mode(lambda model, example, calibration, fine_tune: quantize_dynamic_int8(model), ("linear",)),
    "static": Mode(lambda model, example, calibration, fine_tune: quantize_static(model, calibration, example),
                   ("conv", "linear")),
    # Observers need no fine-tune to be calibrated: before training QAT is measured as
    # static int8, which has the same int8 kernels.
    "qat": Mode(lambda model, example, calibration, fine_tune: quantize_qat(model, example, fine_tune),
                ("conv", "linear"), untrained="static", on_cpu=False),
}
# Layer kinds each mode runs in int8, by mode (from MODES).
INT8_KINDS = {name: mode.int8_kinds for name, mode in MODES.items() if mode.int8_kinds}


def apply(
    model: nn.Module,
    mode: str,
    example_input: torch.Tensor,
    calibration: Iterable[torch.Tensor] = (),
    fine_tune: Callable[[nn.Module], None] | None = None,
) -> nn.Module:
    handler = MODES.get(mode, MODES["none"])
    return handler.convert(model, example_input, calibration, fine_tune or (lambda m: None))


def _on_cpu(model: nn.Module) -> nn.Module:
    # torch's int8 kernels are CPU kernels: a model trained on CUDA is quantized on the CPU.
    return model.cpu()


class Quantization(Dimension):
    name = "quantization"
    config = QuantizationSpace
    stage = "compress"
    order = 50
    in_baseline = False
    after_training = True
    facts = {"quantized": Fact(card=True, untrained=True)}
    aliases = {"quant_mode": tuple(f"quant_mode_{family}" for family in FAMILY_MODES)}

    def suggest(self, trial, config: QuantizationSpace, ctx: SuggestContext) -> dict:
        family = ctx.params.get("family")
        allowed = FAMILY_MODES.get(family)
        if allowed is None:
            return {"quant_mode": suggest_choice(trial, "quant_mode", config.modes)}
        # Another parameter name: an Optuna categorical keeps one set of choices per name.
        modes = [m for m in config.modes if m in allowed] or ["none"]
        return {"quant_mode": suggest_choice(trial, f"quant_mode_{family}", modes)}

    def apply(self, model: nn.Module, params: dict, ctx: TrialContext) -> nn.Module:
        mode = params.get("quant_mode", "none")
        ctx.float_model = model
        if mode == "none":
            return model.eval()
        config = ctx.settings(self)
        ctx.float_model = copy.deepcopy(model).cpu()
        handler = MODES[mode]
        ctx.info["precision_kinds"] = {"int8": handler.int8_kinds}
        return apply(
            _on_cpu(model) if handler.on_cpu else model,
            mode,
            ctx.example,
            calibration=ctx.calibration(),
            fine_tune=lambda prepared: ctx.fit(prepared, config.qat_epochs, seed_offset=2),
        )

    def preflight(self, model: nn.Module, config: QuantizationSpace, ctx: TrialContext) -> list[Check]:
        allowed = FAMILY_MODES.get(ctx.params.get("family"))
        checks = []
        for mode in config.modes:
            if mode == "none" or (allowed is not None and mode not in allowed):
                continue
            if ctx.spec.measure.device == "cuda":
                checks.append(Check(self.name, mode, False, "int8 kernels run on the CPU, but measure.device is cuda", "space.quantization.modes"))
                continue
            try:
                batches = ctx.calibration()[:2]

                def observe(prepared: nn.Module) -> None:  # QAT: one forward pass sets its observers
                    with torch.no_grad():
                        for batch in batches:
                            prepared(batch)

                quantized = apply(copy.deepcopy(model).cpu(), mode, ctx.example, calibration=batches, fine_tune=observe)
                with torch.no_grad():
                    out = quantized(ctx.example)
                if tuple(out.shape) != (len(ctx.example), ctx.task.n_classes):
                    raise ValueError(f"the int8 model returns shape {tuple(out.shape)}")
                count = sum(".quantized" in type(m).__module__ and "PackedParams" not in type(m).__name__ for m in quantized.modules())
                if count == 0:
                    raise ValueError("nothing was quantized (no layer this mode converts): the model would stay fp32")
                checks.append(Check(self.name, mode, True, f"{count} int8 modules", "space.quantization.modes"))
            except Exception as exc:  # noqa: BLE001 - the reason is the preflight's answer
                checks.append(Check(self.name, mode, False, first_line(exc), "space.quantization.modes"))
        return checks

    def describe(self, params: dict, config) -> str:
        return str(self.value(params, "quant_mode", "none"))

    def untrained_params(self, params: dict) -> dict:
        handler = MODES.get(params.get("quant_mode"))
        if handler is None or handler.untrained is None:
            return params
        return {**params, "quant_mode": handler.untrained}

    def record(self, model: nn.Module, runner: nn.Module, params: dict, ctx: TrialContext) -> dict:
        return {"quantized": is_quantized(model)}

    def calibration_batches(self, config: QuantizationSpace) -> int:
        return config.calibration_batches


register(Quantization)

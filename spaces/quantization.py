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
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from spaces._config import Strict, choices, suggest_choice
from spaces.dimension import Check, Dimension, SuggestContext, TrialContext, first_line, register


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


with _quiet():
    from torch.ao.quantization import get_default_qat_qconfig_mapping, get_default_qconfig_mapping, quantize_dynamic
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx, prepare_qat_fx

BACKEND = "x86"
# Attention blocks do not trace into FX static quantization; they get dynamic or none.
FAMILY_MODES = {"transformer": ("none", "dynamic")}
# Layer kinds each mode runs in int8 (the rest stays fp32): for the energy estimate.
INT8_KINDS = {"static": ("conv", "linear"), "qat": ("conv", "linear"), "dynamic": ("linear",)}


class QuantizationSpace(Strict):
    modes: list[Literal["none", "dynamic", "static", "qat"]] = choices("mode", ["none", "dynamic", "static", "qat"])
    calibration_batches: int = Field(default=8, ge=1, le=1000)
    qat_epochs: int = Field(default=2, ge=1, le=100)


def _engine() -> None:
    torch.backends.quantized.engine = BACKEND


def quantize_dynamic_int8(model: nn.Module) -> nn.Module:
    _engine()
    with _quiet():
        return quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8)


def quantize_static(model: nn.Module, calibration: Iterable[torch.Tensor], example_input: torch.Tensor) -> nn.Module:
    _engine()
    with _quiet():
        prepared = prepare_fx(model.eval(), get_default_qconfig_mapping(BACKEND), (example_input,))
        with torch.inference_mode():
            for batch in calibration:
                prepared(batch)
        return convert_fx(prepared)


def quantize_qat(model: nn.Module, example_input: torch.Tensor, fine_tune: Callable[[nn.Module], None]) -> nn.Module:
    """Insert fake-quant observers, fine-tune with them (`fine_tune(model)` trains in
    place), then convert to a real int8 model."""
    _engine()
    with _quiet():
        prepared = prepare_qat_fx(model.train(), get_default_qat_qconfig_mapping(BACKEND), (example_input,))
    fine_tune(prepared)
    with _quiet():
        return convert_fx(prepared.cpu().eval())  # int8 kernels are CPU kernels


def is_quantized(model: nn.Module) -> bool:
    return any(".quantized" in type(m).__module__ for m in model.modules())


def apply(
    model: nn.Module,
    mode: str,
    example_input: torch.Tensor,
    calibration: Iterable[torch.Tensor] = (),
    fine_tune: Callable[[nn.Module], None] | None = None,
) -> nn.Module:
    if mode == "dynamic":
        return quantize_dynamic_int8(model)
    if mode == "static":
        return quantize_static(model, calibration, example_input)
    if mode == "qat":
        return quantize_qat(model, example_input, fine_tune or (lambda m: None))
    return model.eval()


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
        ctx.info["int8_kinds"] = INT8_KINDS[mode]
        return apply(
            _on_cpu(model) if mode != "qat" else model,
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


register(Quantization)

"""Quantization dimension: none, dynamic (int8 Linear weights, activations quantized
on the fly), static (post-training, calibrated on training batches) and QAT
(fake-quant fine-tuning, then conversion). Converted models run torch's int8 CPU
kernels (x86 backend: fbgemm + onednn).

torch.ao.quantization is deprecated in favour of torchao but still ships and works in
torch 2.13; its deprecation warnings are silenced here on purpose, nowhere else.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable

import torch
from torch import nn

from search.spec import QuantizationSpace
from spaces._suggest import suggest_choice

warnings.filterwarnings("ignore", module=r"torch\.ao\.quantization.*")
warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*")
warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*")
warnings.filterwarnings("ignore", message=r".*reduce_range will be deprecated.*")

from torch.ao.quantization import get_default_qat_qconfig_mapping, get_default_qconfig_mapping, quantize_dynamic  # noqa: E402
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx, prepare_qat_fx  # noqa: E402

BACKEND = "x86"
# Attention blocks do not trace into FX static quantization; they get dynamic or none.
FAMILY_MODES = {"transformer": ("none", "dynamic")}


def suggest(trial, bounds: QuantizationSpace, family: str = "cnn") -> dict:
    allowed = FAMILY_MODES.get(family)
    if allowed is None:
        return {"quant_mode": suggest_choice(trial, "quant_mode", bounds.modes)}
    modes = [m for m in bounds.modes if m in allowed] or ["none"]
    return {"quant_mode": suggest_choice(trial, f"quant_mode_{family}", modes)}


def _engine() -> None:
    torch.backends.quantized.engine = BACKEND


def quantize_dynamic_int8(model: nn.Module) -> nn.Module:
    _engine()
    return quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8)


def quantize_static(model: nn.Module, calibration: Iterable[torch.Tensor], example_input: torch.Tensor) -> nn.Module:
    _engine()
    prepared = prepare_fx(model.eval(), get_default_qconfig_mapping(BACKEND), (example_input,))
    with torch.inference_mode():
        for batch in calibration:
            prepared(batch)
    return convert_fx(prepared)


def quantize_qat(model: nn.Module, example_input: torch.Tensor, fine_tune: Callable[[nn.Module], None]) -> nn.Module:
    """Insert fake-quant observers, fine-tune with them (`fine_tune(model)` trains in
    place), then convert to a real int8 model."""
    _engine()
    prepared = prepare_qat_fx(model.train(), get_default_qat_qconfig_mapping(BACKEND), (example_input,))
    fine_tune(prepared)
    return convert_fx(prepared.eval())


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

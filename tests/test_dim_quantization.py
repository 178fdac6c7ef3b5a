"""The quantization dimension: each mode's handler converts as named."""

from __future__ import annotations

import pytest
import torch

import spaces
from objectives import complexity
from search.core.spec import from_dict
from search.tasks.task import calibration_batches
from spaces import architecture, quantization
from tests.conftest import acc, sample_many, tiny_spec_dict, train
from tests.dims import CNN16, MLP16, RECIPE_ADAM, digits, trained_adam  # noqa: F401 - fixtures


@pytest.mark.parametrize("mode", ["static", "qat"])
def test_static_and_qat_models_run_int8_kernels_and_classify(digits, mode):
    model = trained_adam(digits, CNN16)
    example = torch.from_numpy(digits.train.X[:2])
    q = quantization.apply(
        model,
        mode,
        example,
        calibration=calibration_batches(digits, 4),
        fine_tune=lambda m: train(m, digits, {**CNN16, **RECIPE_ADAM}, epochs=1, lr_scale=0.1, constant_lr=True),
    )
    kinds = {type(m).__module__ for m in q.modules()}
    assert any("quantized" in k and "dynamic" not in k for k in kinds), kinds
    assert quantization.is_quantized(q)
    assert complexity.size_kb(q) < 0.5 * complexity.size_kb(architecture.build(CNN16, digits.input_shape, 10))
    assert acc(q, digits) > 0.8


def test_dynamic_quantization_swaps_linear_layers(digits):
    q = quantization.apply(trained_adam(digits, MLP16, 2), "dynamic", torch.from_numpy(digits.train.X[:2]))
    dynamic = [m for m in q.modules() if "quantized.dynamic" in type(m).__module__]
    assert len(dynamic) == 3  # 2 hidden + classifier
    assert acc(q, digits) > 0.8


def test_quantization_modes_for_transformer_are_restricted():
    spec = from_dict(tiny_spec_dict(space={"architecture": {"families": ["transformer"]}}))
    assert {c["quant_mode"] for c in sample_many(spec, 30)} <= {"none", "dynamic"}


# --- the mode table and hooks -----------------------------------------------------------------------


def test_every_mode_has_one_handler():
    assert list(quantization.MODES) == quantization.QuantizationSpace().modes == ["none", "dynamic", "static", "qat"]
    assert quantization.INT8_KINDS == {"dynamic": ("linear",), "static": ("conv", "linear"), "qat": ("conv", "linear")}
    model = torch.nn.Linear(2, 2)
    assert quantization.apply(model, "none", torch.zeros(1, 2)) is model


def test_qat_is_measured_before_training_as_static():
    dim = quantization.Quantization()
    assert dim.untrained_params({"quant_mode": "qat", "x": 1}) == {"quant_mode": "static", "x": 1}
    for mode in ("none", "dynamic", "static"):
        assert dim.untrained_params({"quant_mode": mode}) == {"quant_mode": mode}
    assert dim.untrained_params({}) == {}


def test_compress_records_the_int8_macs_and_the_quantized_fact(digits):
    from search.trial.measurement import macs_by_precision
    from search.trial.pipeline import compress

    assert macs_by_precision({"conv": 10, "linear": 5, "norm": 1}, {}) == {"fp32": 16}
    assert macs_by_precision({"conv": 10, "linear": 5}, {"int8": ("linear",)}) == {"fp32": 10, "int8": 5}
    assert macs_by_precision({"conv": 10}, {"int8": ("linear",)}) == {"fp32": 10}

    from search.tasks.plugins import Plugins
    from search.trial.pipeline import trial_context

    spec = from_dict(tiny_spec_dict())
    params = {**MLP16, **RECIPE_ADAM, "prune_kind": "none", "quant_mode": "dynamic"}
    ctx = trial_context(params, digits, spec, 0, Plugins())
    model = architecture.build(MLP16, digits.input_shape, digits.n_classes)
    dim = quantization.Quantization()
    deployed = compress(model, params, ctx, [dim])
    linear = complexity.count_macs(ctx.float_model, ctx.example)["linear"]
    assert ctx.info["precision_kinds"] == {"int8": ("linear",)} and ctx.info["macs_by_precision"]["int8"] == linear
    assert dim.record(deployed, deployed, params, ctx) == {"quantized": True}
    assert dim.record(ctx.float_model, ctx.float_model, params, ctx) == {"quantized": False}


def test_calibration_draws_what_the_quantization_section_asks(digits):
    from search.tasks.plugins import Plugins
    from search.trial.pipeline import trial_context

    spec = from_dict(tiny_spec_dict(space={"quantization": {"calibration_batches": 3}}))
    assert quantization.Quantization().calibration_batches(spec.space.quantization) == 3
    assert spaces.calibration_batches(spec) == 3
    assert len(trial_context({}, digits, spec, 0, Plugins()).calibration()) == 3

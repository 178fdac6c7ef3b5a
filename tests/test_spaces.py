"""Each search dimension: suggest stays inside the spec's bounds and conditions;
apply has its real effect on the model."""

from __future__ import annotations

import optuna
import pytest
import torch

import spaces
from objectives import accuracy, complexity
from search.data import load_task
from search.spec import from_dict
from search.data import calibration_batches
from spaces import architecture, pruning, quantization, regularization, schedule
from tests.conftest import acc, sample_many, tiny_spec_dict, train

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def digits():
    return load_task(from_dict(tiny_spec_dict()))


def test_suggest_respects_bounds_and_conditions():
    spec = from_dict(
        tiny_spec_dict(
            space={
                "architecture": {"families": ["mlp", "cnn"], "width": [8, 12], "depth": [1, 2], "kernels": [5]},
                "pruning": {"kinds": ["none", "structured"], "ratio": [0.2, 0.4]},
                "quantization": {"modes": ["none", "static"]},
                "schedule": {"optimizers": ["adamw"], "lr": {"low": 1e-3, "high": 1e-2, "log": True}},
                "regularization": {"dropout": [0.0, 0.1], "l1": [False]},
            }
        )
    )
    configs = sample_many(spec)
    assert {c["family"] for c in configs} == {"mlp", "cnn"}
    for c in configs:
        assert 8 <= c["width"] <= 12 and 1 <= c["depth"] <= 2
        assert ("kernel" in c) == (c["family"] == "cnn") and c.get("kernel", 5) == 5
        assert c["prune_kind"] in ("none", "structured")
        assert ("prune_ratio" in c) == (c["prune_kind"] != "none")
        assert 0.2 <= c.get("prune_ratio", 0.3) <= 0.4
        assert c["quant_mode"] in ("none", "static") and c["optimizer"] == "adamw"
        assert 1e-3 <= c["lr"] <= 1e-2 and 0 <= c["dropout"] <= 0.1 and "l1" not in c


def test_tabular_task_only_gets_mlp():
    spec = from_dict(tiny_spec_dict(task="wine"))
    assert {c["family"] for c in sample_many(spec, 20, "tabular")} == {"mlp"}


def test_conditional_l1_strength_only_when_enabled():
    spec = from_dict(tiny_spec_dict(space={"regularization": {"l1": [True], "l1_strength": {"low": 1e-6, "high": 1e-5, "log": True}}}))
    assert all(1e-6 <= c["l1"] <= 1e-5 for c in sample_many(spec, 10))


CNN = {"family": "cnn", "width": 16, "depth": 2, "kernel": 3, "batch_norm": True}
MLP = {"family": "mlp", "width": 16, "depth": 2, "batch_norm": True}
MOBILE = {"family": "mobilenet", "width": 16, "depth": 2, "kernel": 3, "batch_norm": True}
RECIPE = {"optimizer": "adam", "lr": 3e-3, "schedule": "cosine", "batch_size": 64, "weight_decay": 1e-4, "label_smoothing": 0.0}


@pytest.mark.parametrize("arch", [MLP, CNN, MOBILE], ids=["mlp", "cnn", "mobilenet"])
def test_architectures_build_and_learn(digits, arch):
    torch.manual_seed(0)
    model = architecture.build(arch, digits.input_shape, digits.n_classes)
    assert model(torch.from_numpy(digits.val.X[:4])).shape == (4, 10)
    train(model, digits, {**arch, **RECIPE}, epochs=3)
    assert acc(model, digits) > 0.6  # chance is 0.1


def test_mobilenet_uses_depthwise_convolutions(digits):
    model = architecture.build(MOBILE, digits.input_shape, digits.n_classes)
    assert any(isinstance(m, torch.nn.Conv2d) and m.groups == m.in_channels > 1 for m in model.modules())


def test_structured_pruning_half_cuts_params_and_macs(digits):
    model = architecture.build(CNN, digits.input_shape, digits.n_classes)
    example = torch.from_numpy(digits.val.X[:2])
    params_before, macs_before = complexity.count_params(model)[0], sum(complexity.count_macs(model, example).values())
    pruning.apply(model, {"prune_kind": "structured", "prune_ratio": 0.5}, example)
    params_after, macs_after = complexity.count_params(model)[0], sum(complexity.count_macs(model, example).values())
    assert params_after < 0.45 * params_before  # both sides of a conv shrink: ~(1-0.5)^2
    assert macs_after < 0.45 * macs_before
    assert model(example).shape == (2, 10)  # still a working model
    assert model.classifier.out_features == 10  # classes untouched


def test_unstructured_pruning_zeroes_the_ratio_and_stays_zero_after_finetune(digits):
    torch.manual_seed(0)
    model = architecture.build(MLP, digits.input_shape, digits.n_classes)
    pruning.apply(model, {"prune_kind": "unstructured", "prune_ratio": 0.6}, torch.from_numpy(digits.val.X[:2]))
    train(model, digits, {**MLP, **RECIPE}, epochs=1, lr_scale=0.1, constant_lr=True)
    pruning.finalize(model)
    assert pruning.sparsity(model) == pytest.approx(0.6, abs=0.01)
    assert not any(name.endswith("_orig") for name, _ in model.named_parameters())


@pytest.mark.parametrize("setting, ratio, epochs, expected", [
    ("auto", 0.5, 15, 8), ("auto", 0.1, 15, 2), ("auto", 0.8, 15, 12), ("auto", 0.05, 2, 1), ("auto", 0.5, 2, 1),
    (3, 0.9, 15, 3), (0, 0.5, 15, 0),
])
def test_finetune_after_pruning_scales_with_the_ratio(digits, setting, ratio, expected, epochs):
    """The pruning dimension fine-tunes ceil(ratio × budget.epochs) epochs by default, a fixed number when given."""
    from types import SimpleNamespace

    assert pruning.finetune_budget(setting, ratio, epochs) == expected
    spec = from_dict(tiny_spec_dict(budget={"epochs": epochs}, space={"pruning": {"finetune_epochs": setting}}))
    asked = []
    ctx = SimpleNamespace(example=torch.from_numpy(digits.val.X[:2]), task=digits, spec=spec,
                          settings=lambda d: spec.space.section(d.name), fit=lambda model, n, **kw: asked.append(n))
    model = architecture.build(MLP, digits.input_shape, digits.n_classes)
    pruning.Pruning().apply(model, {"prune_kind": "structured", "prune_ratio": ratio}, ctx)
    assert asked == [expected]


@pytest.mark.parametrize("value", ["sometimes", 101, -1])
def test_finetune_epochs_must_be_auto_or_a_small_number(value):
    from search.errors import UsageError

    with pytest.raises(UsageError, match="space.pruning.finetune_epochs"):
        from_dict(tiny_spec_dict(space={"pruning": {"finetune_epochs": value}}))


def _trained(digits, arch, epochs=4):
    torch.manual_seed(0)
    model = architecture.build(arch, digits.input_shape, digits.n_classes)
    return train(model, digits, {**arch, **RECIPE}, epochs=epochs)


@pytest.mark.parametrize("mode", ["static", "qat"])
def test_static_and_qat_models_run_int8_kernels_and_classify(digits, mode):
    model = _trained(digits, CNN)
    example = torch.from_numpy(digits.train.X[:2])
    q = quantization.apply(
        model,
        mode,
        example,
        calibration=calibration_batches(digits, 4),
        fine_tune=lambda m: train(m, digits, {**CNN, **RECIPE}, epochs=1, lr_scale=0.1, constant_lr=True),
    )
    kinds = {type(m).__module__ for m in q.modules()}
    assert any("quantized" in k and "dynamic" not in k for k in kinds), kinds
    assert quantization.is_quantized(q)
    assert complexity.size_kb(q) < 0.5 * complexity.size_kb(architecture.build(CNN, digits.input_shape, 10))
    assert acc(q, digits) > 0.8


def test_dynamic_quantization_swaps_linear_layers(digits):
    q = quantization.apply(_trained(digits, MLP, 2), "dynamic", torch.from_numpy(digits.train.X[:2]))
    dynamic = [m for m in q.modules() if "quantized.dynamic" in type(m).__module__]
    assert len(dynamic) == 3  # 2 hidden + classifier
    assert acc(q, digits) > 0.8


def test_quantization_modes_for_transformer_are_restricted():
    spec = from_dict(tiny_spec_dict(space={"architecture": {"families": ["transformer"]}}))
    assert {c["quant_mode"] for c in sample_many(spec, 30)} <= {"none", "dynamic"}


@pytest.mark.parametrize("name", ["constant", "step", "exponential", "cosine", "onecycle", "cyclic"])
def test_schedules_change_lr_as_named(name):
    model = torch.nn.Linear(2, 2)
    params = {"optimizer": "adam", "lr": 0.01, "schedule": name}
    optimizer = schedule.make_optimizer(model, params)
    scheduler = schedule.make_scheduler(optimizer, params, total_steps=60)
    lrs = []
    for _ in range(60):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    if name == "constant":
        assert set(lrs) == {0.01}
    elif name in ("step", "exponential", "cosine"):
        assert lrs[-1] < 0.5 * 0.01 and all(b <= a + 1e-12 for a, b in zip(lrs, lrs[1:]))
    elif name == "onecycle":
        assert max(lrs) == pytest.approx(0.01, rel=0.05) and lrs[-1] < 0.001
    else:
        assert min(lrs) < 0.003 and max(lrs) > 0.008 and lrs.index(max(lrs)) < 30  # goes up then down again


def test_sgd_has_momentum_and_weight_decay():
    optimizer = schedule.make_optimizer(torch.nn.Linear(2, 2), {"optimizer": "sgd", "lr": 0.1}, weight_decay=1e-3)
    assert optimizer.param_groups[0]["momentum"] == 0.9 and optimizer.param_groups[0]["weight_decay"] == 1e-3


def test_regularization_l1_and_label_smoothing():
    model = torch.nn.Linear(3, 2, bias=False)
    torch.nn.init.constant_(model.weight, -0.5)
    assert float(regularization.l1_penalty(model, {"l1": 0.1})) == pytest.approx(0.1 * 3.0)
    assert regularization.l1_penalty(model, {}) == 0.0
    assert regularization.criterion({"label_smoothing": 0.1}).label_smoothing == 0.1

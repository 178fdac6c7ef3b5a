"""The pruning dimension: structured, unstructured and gradual pruning have their real
effect; the fine-tune budget; the transformer's pruning kinds."""

from __future__ import annotations

import copy

import pytest
import torch

from objectives import complexity
from search.core.spec import from_dict
from spaces import architecture, pruning, quantization
from tests.conftest import acc, tiny_spec_dict, train
from tests.dims import CNN16, MLP8, MLP16, RECIPE_ADAM, RECIPE_ADAMW, TRANSFORMER, compress_trial, digits  # noqa: F401 - fixtures


def test_structured_pruning_half_cuts_params_and_macs(digits):
    model = architecture.build(CNN16, digits.input_shape, digits.n_classes)
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
    model = architecture.build(MLP16, digits.input_shape, digits.n_classes)
    pruning.apply(model, {"prune_kind": "unstructured", "prune_ratio": 0.6}, torch.from_numpy(digits.val.X[:2]))
    train(model, digits, {**MLP16, **RECIPE_ADAM}, epochs=1, lr_scale=0.1, constant_lr=True)
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
    model = architecture.build(MLP16, digits.input_shape, digits.n_classes)
    pruning.Pruning().apply(model, {"prune_kind": "structured", "prune_ratio": ratio}, ctx)
    assert asked == [expected]


@pytest.mark.parametrize("value", ["sometimes", 101, -1])
def test_finetune_epochs_must_be_auto_or_a_small_number(value):
    from search.core.errors import UsageError

    with pytest.raises(UsageError, match="space.pruning.finetune_epochs"):
        from_dict(tiny_spec_dict(space={"pruning": {"finetune_epochs": value}}))


def test_gradual_ramp_is_cubic_monotone_and_ends_at_the_target():
    values = [pruning.gradual_target(step, 100, 0.8) for step in range(101)]
    assert values[10] == 0.0 and values[80] == values[100] == pytest.approx(0.8)
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert values[45] == pytest.approx(0.8 * (1 - 0.5**3))  # halfway through the ramp: 7/8 of the target


@pytest.mark.parametrize("epochs", [2, 6])
def test_gradual_pruning_reaches_the_target_sparsity_at_the_end_of_training(digits, epochs):
    spec = from_dict(tiny_spec_dict(budget={"epochs": epochs}))
    params = {**MLP8, **RECIPE_ADAMW, "prune_kind": "gradual", "prune_ratio": 0.7, "quant_mode": "none"}
    seen = []
    model = architecture.build(MLP8, digits.input_shape, 10)
    pruner = pruning.GradualPruner(model, 0.7, epochs)

    class Recorder:
        def on_epoch_end(self, epoch):
            seen.append((pruner.on_epoch_end(epoch), pruning.sparsity(model)))

    train(model, digits, params, epochs, epoch_hooks=(Recorder(),))
    assert all(abs(target - got) < 0.01 for target, got in seen)
    assert [t for t, _ in seen] == sorted(t for t, _ in seen) and seen[-1][0] == pytest.approx(0.7)
    deployed, _, _ = compress_trial(params, digits, spec, seed=0)
    assert pruning.sparsity(deployed) == pytest.approx(0.7, abs=0.01)
    assert not any(name.endswith("_orig") for name, _ in deployed.named_parameters())
    assert acc(deployed, digits) > 0.5


def test_transformer_pruning_kinds(digits):
    example = torch.from_numpy(digits.train.X[:2])
    model = architecture.build({**TRANSFORMER, "layers": 2}, digits.input_shape, 10)
    params_before = complexity.count_params(model)[0]
    macs_before = complexity.count_macs(model, example)
    in_proj = [layer.self_attn.in_proj_weight.clone() for layer in model.encoder.layers]

    structured = pruning.apply(copy.deepcopy(model), {"prune_kind": "structured", "prune_ratio": 0.5}, example)
    assert all(layer.linear1.out_features == 32 and layer.linear2.in_features == 32 for layer in structured.encoder.layers)
    macs_after = complexity.count_macs(structured, example)
    assert macs_after["linear"] < 0.6 * macs_before["linear"] and macs_after["attention"] == macs_before["attention"]
    assert complexity.count_params(structured)[0] < params_before and structured(example).shape == (2, 10)

    unstructured = pruning.finalize(pruning.apply(copy.deepcopy(model), {"prune_kind": "unstructured", "prune_ratio": 0.5}, example))
    assert pruning.sparsity(unstructured) == pytest.approx(0.5, abs=0.01)
    assert all(torch.equal(a, layer.self_attn.in_proj_weight) for a, layer in zip(in_proj, unstructured.encoder.layers))

    spec = from_dict(tiny_spec_dict())
    config = {**TRANSFORMER, **RECIPE_ADAMW, "prune_kind": "gradual", "prune_ratio": 0.4, "quant_mode": "dynamic"}
    deployed, float_model, _ = compress_trial(config, digits, spec, seed=0)
    assert pruning.sparsity(float_model) == pytest.approx(0.4, abs=0.01) and quantization.is_quantized(deployed)


# --- hooks ------------------------------------------------------------------------------------------


def test_gradual_pruning_is_measured_before_training_as_its_one_shot_form():
    dim = pruning.Pruning()
    assert dim.untrained_params({"prune_kind": "gradual", "prune_ratio": 0.5}) == {"prune_kind": "unstructured", "prune_ratio": 0.5}
    for kind in ("none", "unstructured", "structured"):
        assert dim.untrained_params({"prune_kind": kind}) == {"prune_kind": kind}

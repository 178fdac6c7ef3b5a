"""The architecture dimension: the built-in families build and learn, tabular tasks
get the MLP, the small transformer trains."""

from __future__ import annotations

import copy

import pytest
import torch

import spaces
from objectives import complexity
from search.core.spec import from_dict
from spaces import architecture, quantization
from tests.conftest import acc, sample_many, tiny_spec_dict, train
from tests.dims import CNN16, MLP16, MOBILE16, RECIPE_ADAM, TRANSFORMER, digits, trained_adamw  # noqa: F401 - fixtures


def test_tabular_task_only_gets_mlp():
    spec = from_dict(tiny_spec_dict(task="wine"))
    assert {c["family"] for c in sample_many(spec, 20, "tabular")} == {"mlp"}


@pytest.mark.parametrize("arch", [MLP16, CNN16, MOBILE16], ids=["mlp", "cnn", "mobilenet"])
def test_architectures_build_and_learn(digits, arch):
    torch.manual_seed(0)
    model = architecture.build(arch, digits.input_shape, digits.n_classes)
    assert model(torch.from_numpy(digits.val.X[:4])).shape == (4, 10)
    train(model, digits, {**arch, **RECIPE_ADAM}, epochs=3)
    assert acc(model, digits) > 0.6  # chance is 0.1


def test_mobilenet_uses_depthwise_convolutions(digits):
    model = architecture.build(MOBILE16, digits.input_shape, digits.n_classes)
    assert any(isinstance(m, torch.nn.Conv2d) and m.groups == m.in_channels > 1 for m in model.modules())


def test_transformer_trains_above_chance_and_quantizes_dynamically(digits):
    model = trained_adamw(digits, TRANSFORMER, epochs=3)
    float_accuracy = acc(model, digits)
    assert float_accuracy > 0.3  # chance is 0.1
    q = quantization.apply(copy.deepcopy(model), "dynamic", torch.from_numpy(digits.train.X[:2]))
    assert sum("quantized.dynamic" in type(m).__module__ for m in q.modules()) == 3  # linear1, linear2, classifier
    assert acc(q, digits) == pytest.approx(float_accuracy, abs=0.05)
    assert complexity.size_kb(q) < complexity.size_kb(model)


# --- hooks ------------------------------------------------------------------------------------------


def test_the_preflight_builds_one_model_per_family_the_task_can_take(digits):
    from search.tasks.plugins import Plugins
    from search.trial import preflight

    dim = architecture.Architecture()
    config = architecture.ArchitectureSpace(families=["mlp", "cnn", "transformer"])
    assert dim.preflight_models(config, spaces.SuggestContext("image")) == [{"family": f} for f in ("mlp", "cnn", "transformer")]
    assert dim.preflight_models(config, spaces.SuggestContext("tabular")) == [{"family": "mlp"}]
    spec = from_dict(tiny_spec_dict(space={"architecture": {"families": ["mlp", "cnn"]}}))
    assert [v["family"] for v in preflight._variants(spec, digits, Plugins())] == ["mlp", "cnn"]


def test_the_model_card_names_the_family():
    assert architecture.Architecture().model_card({"family": "cnn", "width": 8}, None) == {"source": "built-in", "family": "cnn"}

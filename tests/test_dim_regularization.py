"""The regularization dimension: L1 only when enabled, its penalty and label smoothing."""

from __future__ import annotations

import pytest
import torch

import spaces
from search.core.spec import from_dict
from spaces import regularization
from tests.conftest import sample_many, tiny_spec_dict


def test_conditional_l1_strength_only_when_enabled():
    spec = from_dict(tiny_spec_dict(space={"regularization": {"l1": [True], "l1_strength": {"low": 1e-6, "high": 1e-5, "log": True}}}))
    assert all(1e-6 <= c["l1"] <= 1e-5 for c in sample_many(spec, 10))


def test_regularization_l1_and_label_smoothing():
    model = torch.nn.Linear(3, 2, bias=False)
    torch.nn.init.constant_(model.weight, -0.5)
    assert float(regularization.l1_penalty(model, {"l1": 0.1})) == pytest.approx(0.1 * 3.0)
    assert regularization.l1_penalty(model, {}) == 0.0
    assert regularization.criterion({"label_smoothing": 0.1}).label_smoothing == 0.1


# --- hooks ------------------------------------------------------------------------------------------


def test_a_fixed_recipe_sets_the_label_smoothing():
    hooks = spaces.TrainingHooks()
    regularization.Regularization().recipe({"label_smoothing": 0.1}, hooks)
    assert hooks.criterion.label_smoothing == pytest.approx(0.1)

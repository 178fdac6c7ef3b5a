"""The schedule dimension: optimizers and learning-rate schedules as named."""

from __future__ import annotations

import pytest
import torch

import spaces
from spaces import schedule


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


# --- hooks ------------------------------------------------------------------------------------------


def test_a_fixed_recipe_sets_the_optimizer_scheduler_and_batch_size():
    hooks = spaces.TrainingHooks()
    schedule.Schedule().recipe({"optimizer": "sgd", "lr": 0.1, "schedule": "constant", "batch_size": 32}, hooks)
    optimizer = hooks.make_optimizer(torch.nn.Linear(2, 2), 0.5)
    assert hooks.batch_size == 32 and isinstance(optimizer, torch.optim.SGD)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    assert hooks.make_scheduler(optimizer, 10, False) is not None


def test_recipe_hooks_combine_every_dimensions_part():
    from search.trial.training import recipe_hooks

    hooks = recipe_hooks({"optimizer": "adam", "lr": 0.01, "schedule": "cosine", "batch_size": 16, "label_smoothing": 0.2})
    assert hooks.batch_size == 16 and hooks.criterion.label_smoothing == pytest.approx(0.2)
    assert isinstance(hooks.make_optimizer(torch.nn.Linear(2, 2), 1.0), torch.optim.Adam)

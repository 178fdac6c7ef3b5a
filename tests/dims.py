"""What the per-dimension tests (tests/test_dim_*.py) share: small model configs,
training recipes, the digits and wine tasks, and a trained CNN."""

from __future__ import annotations

import pytest
import torch

from search.core.spec import from_dict
from search.tasks.data import load_task
from search.trial.pipeline import build_and_compress
from search.trial.training import train_recipe
from spaces import architecture
from tests.conftest import tiny_spec_dict, train

CNN16 = {"family": "cnn", "width": 16, "depth": 2, "kernel": 3, "batch_norm": True}
MLP16 = {"family": "mlp", "width": 16, "depth": 2, "batch_norm": True}
MOBILE16 = {"family": "mobilenet", "width": 16, "depth": 2, "kernel": 3, "batch_norm": True}
RECIPE_ADAM = {"optimizer": "adam", "lr": 3e-3, "schedule": "cosine", "batch_size": 64, "weight_decay": 1e-4, "label_smoothing": 0.0}

CNN8 = {"family": "cnn", "width": 8, "depth": 2, "kernel": 3, "batch_norm": True}
MLP8 = {"family": "mlp", "width": 8, "depth": 2, "batch_norm": True}
TRANSFORMER = {"family": "transformer", "embed_dim": 32, "heads": 2, "layers": 1}
RECIPE_ADAMW = {"optimizer": "adamw", "lr": 1e-2, "schedule": "cosine", "batch_size": 64, "weight_decay": 1e-4,
                "label_smoothing": 0.0, "dropout": 0.0}
EXTRA_KEYS = ("kd_temperature", "kd_alpha", "kd_feature_weight", "aug_strength", "runtime")


@pytest.fixture(scope="module")
def digits():
    return load_task(from_dict(tiny_spec_dict()))


@pytest.fixture(scope="module")
def wine():
    return load_task(from_dict(tiny_spec_dict(task="wine")))


def trained_adam(digits, arch, epochs=4):
    torch.manual_seed(0)
    model = architecture.build(arch, digits.input_shape, digits.n_classes)
    return train(model, digits, {**arch, **RECIPE_ADAM}, epochs=epochs)


def trained_adamw(task, arch, epochs=2, seed=0):
    torch.manual_seed(seed)
    model = architecture.build(arch, task.input_shape, task.n_classes)
    return train(model, task, {**arch, **RECIPE_ADAMW}, epochs, seed=seed)


@pytest.fixture(scope="module")
def trained_cnn(digits):
    return trained_adamw(digits, {**CNN8, "width": 16}, epochs=3)


def teacher_train(task):
    return lambda model, recipe, epochs, seed: train_recipe(model, task, recipe, epochs, seed)


def compress_trial(params, task, spec, seed=0, teacher=None):
    """(compressed model, float model, info) of a trial's build → train → compress."""
    model, ctx, _ = build_and_compress(params, task, spec, seed, shared={"distillation": teacher} if teacher else None)
    return model, ctx.float_model, ctx.info

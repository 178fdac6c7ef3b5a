"""Shared fixtures: one local Ray per test session, tiny fast specs, a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")

ROOT = Path(__file__).resolve().parents[1]

# A spec small enough that a trial takes about a second: tiny widths, 2 epochs, few repeats.
TINY_SPEC = {
    "name": "tiny",
    "task": "digits",
    "seed": 0,
    "sampler": "tpe",
    "budget": {"trials": 6, "concurrency": 2, "epochs": 2},
    "measure": {"repeats": 10, "warmup": 2},
    "space": {
        "architecture": {"families": ["mlp", "mobilenet"], "width": [8, 16], "depth": [1, 2]},
        "pruning": {"finetune_epochs": 1},
        "quantization": {"qat_epochs": 1, "calibration_batches": 2},
    },
}


def tiny_spec_dict(**overrides) -> dict:
    import copy

    spec = copy.deepcopy(TINY_SPEC)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key].update(value)
        else:
            spec[key] = value
    return spec


def sample_many(spec, n=60, task_kind="image", seed=1, plugins=None) -> list[dict]:
    """`n` configs drawn by a seeded random sampler through the dimension registry."""
    import optuna

    from search.plugins import suggest_params

    study = optuna.create_study(directions=["maximize"], sampler=optuna.samplers.RandomSampler(seed=seed))
    configs = []
    for _ in range(n):
        trial = study.ask()
        configs.append(suggest_params(trial, spec, task_kind, plugins))
        study.tell(trial, 0.0)
    return configs


@pytest.fixture
def tiny_spec():
    from search.spec import from_dict

    return lambda **overrides: from_dict(tiny_spec_dict(**overrides))


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole test session: starting Ray costs seconds."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def write_toml(path: Path, data: dict) -> Path:
    """Write a test spec with the exporter's TOML writer."""
    from search.exporter import dumps

    path.write_text(dumps(data))
    return path


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "search", *args],
        cwd=cwd or ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --- training and accuracy in one call, for tests of single dimensions ------------------


def train(model, task, params, epochs, *, seed=0, lr_scale=1.0, constant_lr=False, augment=None, epoch_hooks=(), pause=None):
    """Train `model` with a fixed recipe in `params` through paretune's own loop."""
    from search.training import fit, recipe_hooks

    hooks = recipe_hooks(params)
    if augment is not None:
        hooks.transforms.append(augment)
    hooks.epoch_hooks.extend(hook.on_epoch_end for hook in epoch_hooks)
    if pause is not None:
        hooks.pause = pause
    return fit(model, task, hooks, epochs, seed=seed, lr_scale=lr_scale, constant_lr=constant_lr)


def acc(model, task, split="val") -> float:
    """Top-1 accuracy on a split of an in-memory task."""
    from objectives import accuracy
    from search.data import loader

    return accuracy.measure(model, loader(getattr(task, split), 512)).value


def predict(model, X):
    """Predicted classes of the rows of an array."""
    import numpy as np
    import torch

    from objectives import accuracy

    return accuracy.predict(model, [(torch.from_numpy(np.ascontiguousarray(X)), np.zeros(len(X)))])[0]

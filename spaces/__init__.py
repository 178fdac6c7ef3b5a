"""The combined search space: one module per dimension, composed here.

`suggest(trial, spec, task_kind)` asks every enabled dimension in turn on one Optuna
trial (define-by-run, so conditional parameters only exist when their parent choice
made them relevant) and returns the flat config a trial pipeline runs.
"""

from __future__ import annotations

from spaces import architecture, pruning, quantization, regularization, schedule


def suggest(trial, spec, task_kind: str = "image") -> dict:
    space = spec.space
    params: dict = {}
    params.update(architecture.suggest(trial, space.architecture, task_kind))
    params.update(schedule.suggest(trial, space.schedule))
    params.update(regularization.suggest(trial, space.regularization))
    params.update(pruning.suggest(trial, space.pruning))
    params.update(quantization.suggest(trial, space.quantization, params["family"]))
    return params


__all__ = ["architecture", "pruning", "quantization", "regularization", "schedule", "suggest"]

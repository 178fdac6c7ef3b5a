"""The combined search space: one module per dimension, composed here.

`suggest(trial, spec, task_kind)` asks every enabled dimension in turn on one Optuna
trial (define-by-run, so conditional parameters only exist when their parent choice
made them relevant) and returns the flat config a trial pipeline runs.

Distillation, augmentation and runtime are optional: off unless the spec enables them
(`[space.distillation] enabled = true`, ...), and then they add no parameters at all.
"""

from __future__ import annotations

from spaces import architecture, augmentation, distillation, pruning, quantization, regularization, runtime, schedule


def suggest(trial, spec, task_kind: str = "image") -> dict:
    if task_kind == "table":  # a tabular benchmark has its own fixed space (search.tabular_bench)
        from search import tabular_bench

        return tabular_bench.suggest(trial)
    space = spec.space
    params: dict = {}
    params.update(architecture.suggest(trial, space.architecture, task_kind))
    params.update(schedule.suggest(trial, space.schedule))
    params.update(regularization.suggest(trial, space.regularization))
    params.update(pruning.suggest(trial, space.pruning))
    params.update(quantization.suggest(trial, space.quantization, params["family"]))
    params.update(distillation.suggest(trial, space.distillation))
    params.update(augmentation.suggest(trial, space.augmentation, task_kind))
    params.update(runtime.suggest(trial, space.runtime, params["quant_mode"]))
    return params


__all__ = [
    "architecture",
    "augmentation",
    "distillation",
    "pruning",
    "quantization",
    "regularization",
    "runtime",
    "schedule",
    "suggest",
]

"""Spec bounds → Optuna suggest calls, shared by every dimension."""

from __future__ import annotations

from search.spec import FloatRange, IntRange


def suggest_range(trial, name: str, bounds: IntRange | FloatRange):
    if isinstance(bounds, IntRange):
        step = 1 if bounds.log else bounds.step  # Optuna: log and step > 1 exclude each other
        return trial.suggest_int(name, bounds.low, bounds.high, step=step, log=bounds.log)
    return trial.suggest_float(name, bounds.low, bounds.high, step=bounds.step, log=bounds.log)


def suggest_choice(trial, name: str, choices: list):
    return trial.suggest_categorical(name, list(choices))

"""The combined search space: one module per dimension, each registering itself.

Every dimension follows one protocol (`spaces.dimension.Dimension`): a config model
(its `[space.<name>]` section), `suggest`, and `prepare`/`apply` hooks over one typed
trial context. This package composes them; search/ (trial pipeline, export, retrain,
front, CLI) loops over the registry instead of naming dimensions.

Built-in, in pipeline order: architecture (or the user's own `model`), schedule,
regularization, pruning, quantization, distillation, augmentation, runtime.
Distillation, augmentation and runtime add no params unless their section says
`enabled = true`.

Importing this package (every dimension's config model, what reading a spec needs)
does not import torch: a built-in dimension takes `torch`, `nn` and `F` from
spaces._lazy, which imports them on first use, and the classes that subclass torch's
live in their own modules (spaces._families, spaces._ort). A user's dimension imports
torch as usual.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from spaces import architecture, augmentation, distillation, model, pruning, quantization, regularization, runtime, schedule
from spaces._config import FloatRange, IntRange, Strict, choices, suggest_choice, suggest_range
from spaces.dimension import (
    Check,
    Dimension,
    Fact,
    StudyContext,
    SuggestContext,
    TrainingHooks,
    TrialContext,
    builtins,
    check_dimension,
    first_line,
)


def section(spec, dimension: Dimension):
    """The dimension's validated config in `spec` (user dimensions: validated here)."""
    value = spec.space.section(dimension.name)
    return value if isinstance(value, dimension.config) else dimension.config.model_validate(value or {})


def active(dimensions: Iterable[Dimension], ctx: SuggestContext) -> list[Dimension]:
    return sorted((d for d in dimensions if d.active(ctx)), key=lambda d: d.order)


def suggest(
    trial, spec, dimensions: Iterable[Dimension], ctx: SuggestContext, *, baseline: bool = False,
    owners: dict[str, Dimension] | None = None,
) -> dict:
    """Ask every active dimension in turn on one Optuna trial (define-by-run: a
    conditional param exists only when its parent choice made it relevant) and return
    the flat config a trial pipeline runs. Two dimensions may not claim one param name.
    `baseline`: only the dimensions `in_baseline` (the others leave the model as is).
    `owners` is filled with the dimension that drew each Optuna param (by its Optuna
    name, which may be an alias)."""
    params: dict = {}
    owner: dict[str, str] = {}
    for dimension in active(dimensions, ctx):
        if baseline and not dimension.in_baseline:
            continue
        ctx.params = params
        before = set(trial.params) if owners is not None else set()
        drawn = dimension.suggest(trial, section(spec, dimension), ctx)
        if owners is not None:
            owners.update({name: dimension for name in trial.params if name not in before})
        for key in drawn:
            if key in owner:
                raise ValueError(
                    f"space.{dimension.name}: param {key!r} is already drawn by dimension {owner[key]!r}; rename it"
                )
            owner[key] = dimension.name
        params.update(drawn)
    return params


class DefaultTrial:
    """A stand-in for an Optuna trial that answers every suggest with the space's default:
    the low end of a range, the first of a list of choices (preflight builds this model)."""

    number = 0

    def __init__(self):
        self.params: dict = {}

    def suggest_int(self, name, low, high, step=1, log=False):
        return self.params.setdefault(name, int(low))

    def suggest_float(self, name, low, high, step=None, log=False):
        return self.params.setdefault(name, float(low))

    def suggest_categorical(self, name, choices):
        return self.params.setdefault(name, list(choices)[0])

    def set_user_attr(self, key, value) -> None:
        pass


class BaselineTrial(DefaultTrial):
    """A stand-in for an Optuna trial that answers with the baseline's values: the
    user's `[baseline] params` where given, else the middle of a range (geometric for a
    log range, on its step) and the first of a list of choices."""

    def __init__(self, given: dict | None = None):
        super().__init__()
        self.given = dict(given or {})

    def _given(self, name: str, check):
        if name not in self.given:
            return None
        value = self.given[name]
        if not check(value):
            raise ValueError(f"baseline.params.{name}: {value!r} is not in the space of {name}")
        return value

    def suggest_int(self, name, low, high, step=1, log=False):
        value = self._given(name, lambda v: isinstance(v, int) and low <= v <= high)
        if value is None:
            middle = math.sqrt(low * high) if log else (low + high) / 2
            value = low + round((middle - low) / step) * step
        return self.params.setdefault(name, int(value))

    def suggest_float(self, name, low, high, step=None, log=False):
        value = self._given(name, lambda v: isinstance(v, (int, float)) and low <= v <= high)
        if value is None:
            value = math.sqrt(low * high) if log else (low + high) / 2
            if step:
                value = low + round((value - low) / step) * step
        return self.params.setdefault(name, float(value))

    def suggest_categorical(self, name, choices):
        choices = list(choices)
        value = self._given(name, lambda v: v in choices)
        return self.params.setdefault(name, choices[0] if value is None else value)


def param_value(params: dict, name: str, dimensions: Iterable[Dimension] = ()):
    """The trial's value of `name`, under whichever Optuna name it was drawn (a dimension
    may draw one choice under per-condition names, e.g. `quant_mode_transformer`)."""
    aliases: tuple[str, ...] = ()
    for dimension in list(dimensions) or builtins():
        aliases += dimension.aliases.get(name, ())
    for key in (name, *aliases):
        if key in params:
            return params[key]
    return None


def untrained_params(params: dict, dimensions: Iterable[Dimension] = ()) -> dict:
    """The params of a trial's stand-in measured before training: each dimension
    rewrites its own (`Dimension.untrained_params`)."""
    out = dict(params)
    for dimension in list(dimensions) or builtins():
        out = dict(dimension.untrained_params(out))
    return out


def record(model, runner, params: dict, ctx: TrialContext, dimensions: Iterable[Dimension]) -> dict:
    """The deployment facts every dimension records for a trial, merged (by name)."""
    facts: dict = {}
    for dimension in dimensions:
        facts.update(dimension.record(model, runner, params, ctx) or {})
    return facts


def facts(dimensions: Iterable[Dimension] = ()) -> dict[str, Fact]:
    """The facts the dimensions record, by name (`Dimension.facts`; built-ins by default)."""
    out: dict[str, Fact] = {}
    for dimension in list(dimensions) or builtins():
        out.update(dimension.facts)
    return out


def ran_on_fact(dimensions: Iterable[Dimension] = ()) -> str | None:
    """The name of the fact that says what a deployed model ran on (`Fact.ran_on`), if
    a dimension records one."""
    return next((name for name, fact in facts(dimensions).items() if fact.ran_on), None)


def usage(fmt: str, dimensions: Iterable[Dimension] = ()) -> tuple[str, str, list[str]] | None:
    """How to load an artifact of format `fmt`, from the dimension that ships it."""
    return next((u for d in (dimensions or builtins()) if (u := d.usage(fmt)) is not None), None)


def calibration_batches(spec, dimensions: Iterable[Dimension] = ()) -> int:
    """How many training batches a trial draws for calibration: the most any dimension asks for."""
    return max((d.calibration_batches(section(spec, d)) for d in list(dimensions) or builtins()), default=0)


def study_work(spec, dimensions: Iterable[Dimension] = ()) -> list[str]:
    """What the dimensions' `prepare_study` does before the first trial, in words."""
    words = (d.study_work(section(spec, d)) for d in list(dimensions) or builtins())
    return [w for w in words if w]


def needing_training(spec, dimensions: Iterable[Dimension] = ()) -> list[Dimension]:
    """The dimensions whose section asks for training (a lookup-table task has none)."""
    return [d for d in list(dimensions) or builtins() if d.needs_training(section(spec, d))]


def describe(params: dict, spec, dimensions: Iterable[Dimension], ctx: SuggestContext) -> str:
    """A trial's model in a few words, one per dimension that has something to say."""
    words = [d.describe(params, section(spec, d)) for d in active(dimensions, ctx)]
    return "/".join(w for w in words if w)


__all__ = [
    "BaselineTrial",
    "Check",
    "DefaultTrial",
    "Dimension",
    "Fact",
    "FloatRange",
    "IntRange",
    "Strict",
    "StudyContext",
    "SuggestContext",
    "TrainingHooks",
    "TrialContext",
    "active",
    "architecture",
    "augmentation",
    "builtins",
    "calibration_batches",
    "check_dimension",
    "choices",
    "describe",
    "distillation",
    "facts",
    "first_line",
    "model",
    "needing_training",
    "param_value",
    "pruning",
    "quantization",
    "record",
    "regularization",
    "runtime",
    "schedule",
    "section",
    "study_work",
    "suggest",
    "suggest_choice",
    "suggest_range",
    "untrained_params",
]

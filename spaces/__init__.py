"""The combined search space: one module per dimension, each registering itself.

Every dimension follows one protocol (`spaces.dimension.Dimension`): a config model
(its `[space.<name>]` section), `suggest`, and `prepare`/`apply` hooks over one typed
trial context. This package composes them; search/ (trial pipeline, export, retrain,
front, CLI) loops over the registry instead of naming dimensions.

Built-in, in pipeline order: architecture (or the user's own `model`), schedule,
regularization, pruning, quantization, distillation, augmentation, runtime.
Distillation, augmentation and runtime add no params unless their section says
`enabled = true`.
"""

from __future__ import annotations

from collections.abc import Iterable

from spaces import architecture, augmentation, distillation, model, pruning, quantization, regularization, runtime, schedule
from spaces._config import FloatRange, IntRange, Strict, choices, suggest_choice, suggest_range
from spaces.dimension import (
    Check,
    Dimension,
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


def suggest(trial, spec, dimensions: Iterable[Dimension], ctx: SuggestContext) -> dict:
    """Ask every active dimension in turn on one Optuna trial (define-by-run: a
    conditional param exists only when its parent choice made it relevant) and return
    the flat config a trial pipeline runs. Two dimensions may not claim one param name."""
    params: dict = {}
    owner: dict[str, str] = {}
    for dimension in active(dimensions, ctx):
        ctx.params = params
        drawn = dimension.suggest(trial, section(spec, dimension), ctx)
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


def describe(params: dict, spec, dimensions: Iterable[Dimension], ctx: SuggestContext) -> str:
    """A trial's model in a few words, one per dimension that has something to say."""
    words = [d.describe(params, section(spec, d)) for d in active(dimensions, ctx)]
    return "/".join(w for w in words if w)


__all__ = [
    "Check",
    "DefaultTrial",
    "Dimension",
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
    "check_dimension",
    "choices",
    "describe",
    "distillation",
    "first_line",
    "model",
    "param_value",
    "pruning",
    "quantization",
    "regularization",
    "runtime",
    "schedule",
    "section",
    "suggest",
    "suggest_choice",
    "suggest_range",
]

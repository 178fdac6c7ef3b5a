"""The building blocks of a dimension's config: strict sections, ranges and choices.

Every `[space.<dimension>]` section of a spec is one of these pydantic models. The
syntax is the same for every dimension, built-in or the user's own:

- a range: `{ low = 8, high = 64, log = true, step = 1 }`, or the short `[low, high]`;
- choices: a list, e.g. `["relu", "hardswish"]`.

Errors say what was given and what must hold, e.g. "`low <= high` must hold, but got
(low=0.9, high=0.1)"; the spec loader adds the file and the field path.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Strict(BaseModel):
    """Unknown keys are errors: a typo in a spec must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _Range(Strict):
    log: bool = False

    @model_validator(mode="before")
    @classmethod
    def _from_pair(cls, value: Any) -> Any:
        # `ratio = [0.1, 0.9]` is shorthand for `ratio = {low = 0.1, high = 0.9}`.
        if isinstance(value, (list, tuple)):
            if len(value) != 2:
                raise ValueError(f"a range is [low, high], but got {list(value)}")
            return {"low": value[0], "high": value[1]}
        return value

    @model_validator(mode="after")
    def _check(self) -> "_Range":
        low, high = self.low, self.high
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(f"bounds must be finite, but got (low={low}, high={high})")
        if low > high:
            raise ValueError(f"`low <= high` must hold, but got (low={low}, high={high})")
        if self.log and low <= 0:
            raise ValueError(f"`low > 0` must hold for a log range, but got (low={low})")
        step = getattr(self, "step", None)
        if step is not None and step <= 0:
            raise ValueError(f"`step > 0` must hold, but got (step={step})")
        return self


class IntRange(_Range):
    low: int
    high: int
    step: int = 1


class FloatRange(_Range):
    low: float
    high: float
    step: float | None = None


def choices(kind: Any, default: list) -> Any:
    """A non-empty list field of choices."""
    return Field(default=default, min_length=1, json_schema_extra={"kind": str(kind)})


def within(value: FloatRange, low: float, high: float, name: str, *, open_low: bool = False) -> FloatRange:
    """Check that a searched range stays inside [low, high] (or (low, high])."""
    below = value.low <= low if open_low else value.low < low
    if below or value.high > high:
        sign = "<" if open_low else "<="
        raise ValueError(f"`{low} {sign} {name} <= {high}` must hold, but got (low={value.low}, high={value.high})")
    return value


def suggest_range(trial, name: str, bounds: IntRange | FloatRange):
    """One Optuna suggest call for a range."""
    if isinstance(bounds, IntRange):
        step = 1 if bounds.log else bounds.step  # Optuna: log and step > 1 exclude each other
        return trial.suggest_int(name, bounds.low, bounds.high, step=step, log=bounds.log)
    return trial.suggest_float(name, bounds.low, bounds.high, step=bounds.step, log=bounds.log)


def suggest_choice(trial, name: str, options: list):
    return trial.suggest_categorical(name, list(options))

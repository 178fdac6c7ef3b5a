"""The user's own model as a dimension: its knobs (`[space.model]`) are searched like
any other parameter and handed to the user's factory.

```toml
[model]
factory = "my_model.py:build"          # build(params, input_shape, n_classes) -> nn.Module
[space.model]
width = { low = 16, high = 64, log = true }   # a range
blocks = [1, 4]                                # [low, high]: an integer range
act = ["relu", "hardswish"]                    # choices
norm = { choices = [0, 1] }                    # numeric choices (two numbers alone read as a range)
stem = 3                                       # a fixed value: passed to build(), not searched
```

`build` gets every param of the trial (the knobs under their own names, and the
other dimensions' params, e.g. `dropout`), the input shape of one sample and the
number of classes. Its model takes a float batch N×input_shape and returns logits
N×n_classes.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import BeforeValidator, ConfigDict, Field, ValidationError

from spaces._config import FloatRange, IntRange, Strict, suggest_choice, suggest_range
from spaces._lazy import nn
from spaces.dimension import Dimension, SuggestContext, TrialContext, register

Scalar = Union[bool, int, float, str]


class Choices(Strict):
    choices: list[Scalar] = Field(min_length=1)


class Fixed(Strict):
    value: Scalar


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def as_knob(value: Any) -> Any:
    """The range/choice syntax every dimension uses, for a knob without a declared type."""
    if isinstance(value, Strict):
        return value
    try:
        if isinstance(value, dict) and "choices" in value:
            return Choices.model_validate(value)
        if isinstance(value, dict) and "value" in value:
            return Fixed.model_validate(value)
        if isinstance(value, dict):
            ints = all(isinstance(value.get(k), int) and not isinstance(value.get(k), bool) for k in ("low", "high"))
            step_int = isinstance(value.get("step", 1), int)
            return (IntRange if ints and step_int else FloatRange).model_validate(value)
        if isinstance(value, (list, tuple)) and len(value) == 2 and all(_number(v) for v in value):
            return (IntRange if all(isinstance(v, int) for v in value) else FloatRange).model_validate(list(value))
        if isinstance(value, (list, tuple)):
            return Choices(choices=list(value))
        return Fixed(value=value)
    except ValidationError as exc:
        raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None


Knob = Annotated[Union[IntRange, FloatRange, Choices, Fixed], BeforeValidator(as_knob)]


class ModelSpace(Strict):
    """Any keys: each is a knob of the user's model."""

    model_config = ConfigDict(extra="allow", frozen=True)
    __pydantic_extra__: dict[str, Knob]

    def knobs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class UserModel(Dimension):
    """The model from `[model] factory` (or `search.launch(model=...)`)."""

    name = "model"
    config = ModelSpace
    stage = "build"
    order = 10

    def active(self, ctx: SuggestContext) -> bool:
        return ctx.user_model

    def suggest(self, trial, config: ModelSpace, ctx: SuggestContext) -> dict:
        params = {}
        for name, knob in config.knobs().items():
            if isinstance(knob, Fixed):
                params[name] = knob.value
            elif isinstance(knob, Choices):
                params[name] = suggest_choice(trial, name, knob.choices)
            else:
                params[name] = suggest_range(trial, name, knob)
        return params

    def apply(self, model, params: dict, ctx: TrialContext) -> nn.Module:
        if ctx.user_model is None:
            raise RuntimeError("no model factory: give [model] factory in the spec or search.launch(model=...)")
        return build_user_model(ctx.user_model, params, ctx.task.input_shape, ctx.task.n_classes)

    def model_card(self, params: dict, spec) -> dict:
        """The user's factory and the trial's value of each knob."""
        knobs = spec.space.model.knobs()
        return {"source": "user", "factory": spec.model.factory, "knobs": {k: params.get(k) for k in knobs}}

    def describe(self, params: dict, config: ModelSpace) -> str:
        searched = [k for k, knob in config.knobs().items() if not isinstance(knob, Fixed) and k in params]
        return " ".join(f"{k}={_short(params[k])}" for k in searched) or "model"


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def build_user_model(factory, params: dict, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """Call the factory and check that it kept its contract."""
    model = factory(dict(params), tuple(input_shape), int(n_classes))
    if not isinstance(model, nn.Module):
        raise TypeError(f"the model factory returned {type(model).__name__}, not a torch.nn.Module")
    return model


register(UserModel)

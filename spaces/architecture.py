"""Architecture dimension: MLP, residual CNN, MobileNet-style depthwise-separable CNN,
and a small patch-embedding transformer.

`width` is the channel count of the first conv stage (an MLP uses 4×width hidden
units); each later stage doubles it and halves the spatial size.
"""

from __future__ import annotations

from typing import Literal

from spaces._config import IntRange, Strict, choices, suggest_choice, suggest_range
from spaces._lazy import nn
from spaces.dimension import Dimension, SuggestContext, TrialContext, register

IMAGE_FAMILIES = ("cnn", "mobilenet", "transformer")


class ArchitectureSpace(Strict):
    families: list[Literal["mlp", "cnn", "mobilenet", "transformer"]] = choices("family", ["mlp", "cnn", "mobilenet"])
    width: IntRange = IntRange(low=8, high=64, log=True)
    depth: IntRange = IntRange(low=1, high=3)
    kernels: list[Literal[3, 5]] = choices("kernel", [3, 5])
    batch_norm: list[bool] = choices("bool", [True, False])
    # Small transformer (patch embedding + encoder layers); used when "transformer" is a family.
    embed_dim: list[Literal[16, 32, 48, 64]] = choices("dim", [16, 32, 64])
    heads: list[Literal[1, 2, 4]] = choices("heads", [1, 2, 4])
    layers: IntRange = IntRange(low=1, high=3)


class Architecture(Dimension):
    """The built-in model families (off when the spec brings its own `[model]`)."""

    name = "architecture"
    config = ArchitectureSpace
    stage = "build"
    order = 10

    def active(self, ctx: SuggestContext) -> bool:
        return not ctx.user_model

    def suggest(self, trial, config: ArchitectureSpace, ctx: SuggestContext) -> dict:
        families = [f for f in config.families if ctx.task_kind == "image" or f not in IMAGE_FAMILIES]
        if not families:
            raise ValueError(f"space.architecture.families: {config.families} all need image data, but the task is {ctx.task_kind}")
        family = suggest_choice(trial, "family", families)
        params = {"family": family}
        if family == "transformer":
            params["embed_dim"] = suggest_choice(trial, "embed_dim", config.embed_dim)
            params["heads"] = suggest_choice(trial, "heads", config.heads)
            params["layers"] = suggest_range(trial, "layers", config.layers)
            return params
        params["width"] = suggest_range(trial, "width", config.width)
        params["depth"] = suggest_range(trial, "depth", config.depth)
        params["batch_norm"] = suggest_choice(trial, "batch_norm", config.batch_norm)
        if family != "mlp":
            params["kernel"] = suggest_choice(trial, "kernel", config.kernels)
        return params

    def apply(self, model, params: dict, ctx: TrialContext) -> nn.Module:
        return build(params, ctx.task.input_shape, ctx.task.n_classes, params.get("dropout", 0.0))

    def describe(self, params: dict, config) -> str:
        return str(params.get("family", ""))

    def preflight_models(self, config: ArchitectureSpace, ctx: SuggestContext) -> list[dict]:
        """One model per family the task can take."""
        return [{"family": f} for f in config.families if ctx.task_kind == "image" or f not in IMAGE_FAMILIES]

    def model_card(self, params: dict, spec) -> dict:
        return {"source": "built-in", "family": params.get("family")}


def build(params: dict, input_shape: tuple[int, ...], n_classes: int, dropout: float = 0.0) -> nn.Module:
    """The family's model (spaces._families) for `params`."""
    from spaces import _families  # deferred: torch, which a spec parse never needs

    return _families.build(params, input_shape, n_classes, dropout)


register(Architecture)

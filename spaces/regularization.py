"""Regularization dimension: weight decay (L2, in the optimizer), optional L1 penalty
on weights, dropout (built into the architecture; a user model reads
`params["dropout"]`) and label smoothing."""

from __future__ import annotations

from spaces._config import FloatRange, Strict, choices, suggest_choice, suggest_range
from spaces._lazy import nn, torch
from spaces.dimension import Dimension, SuggestContext, TrialContext, register


class RegularizationSpace(Strict):
    weight_decay: FloatRange = FloatRange(low=1e-6, high=1e-2, log=True)
    l1: list[bool] = choices("bool", [False, True])
    l1_strength: FloatRange = FloatRange(low=1e-7, high=1e-4, log=True)
    dropout: FloatRange = FloatRange(low=0.0, high=0.5)
    label_smoothing: FloatRange = FloatRange(low=0.0, high=0.2)


def criterion(params: dict) -> nn.Module:
    return nn.CrossEntropyLoss(label_smoothing=params.get("label_smoothing", 0.0))


def l1_penalty(model: nn.Module, params: dict) -> torch.Tensor | float:
    strength = params.get("l1", 0.0)
    if not strength:
        return 0.0
    weights = [p for name, p in model.named_parameters() if name.endswith("weight") and p.dim() > 1]
    return strength * sum(w.abs().sum() for w in weights)


class Regularization(Dimension):
    name = "regularization"
    config = RegularizationSpace
    order = 30

    def suggest(self, trial, config: RegularizationSpace, ctx: SuggestContext) -> dict:
        params = {
            "weight_decay": suggest_range(trial, "weight_decay", config.weight_decay),
            "dropout": suggest_range(trial, "dropout", config.dropout),
            "label_smoothing": suggest_range(trial, "label_smoothing", config.label_smoothing),
        }
        if suggest_choice(trial, "use_l1", config.l1):
            params["l1"] = suggest_range(trial, "l1", config.l1_strength)
        return params

    def prepare(self, model: nn.Module, params: dict, ctx: TrialContext) -> None:
        # Weight decay reaches the optimizer through `params` (schedule.recipe).
        ctx.training.criterion = criterion(params)
        if params.get("l1"):
            ctx.training.penalties.append(lambda model: l1_penalty(model, params))

    def recipe(self, params: dict, hooks) -> None:
        # A fixed recipe's label smoothing; its weight decay reaches the optimizer through `params`.
        hooks.criterion = criterion(params)


register(Regularization)

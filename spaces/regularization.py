"""Regularization dimension: weight decay (L2, in the optimizer), optional L1 penalty
on weights, dropout (built into the architecture) and label smoothing."""

from __future__ import annotations

import torch
from torch import nn

from search.spec import RegularizationSpace
from spaces._suggest import suggest_choice, suggest_range


def suggest(trial, bounds: RegularizationSpace) -> dict:
    params = {
        "weight_decay": suggest_range(trial, "weight_decay", bounds.weight_decay),
        "dropout": suggest_range(trial, "dropout", bounds.dropout),
        "label_smoothing": suggest_range(trial, "label_smoothing", bounds.label_smoothing),
    }
    if suggest_choice(trial, "use_l1", bounds.l1):
        params["l1"] = suggest_range(trial, "l1", bounds.l1_strength)
    return params


def criterion(params: dict) -> nn.Module:
    return nn.CrossEntropyLoss(label_smoothing=params.get("label_smoothing", 0.0))


def l1_penalty(model: nn.Module, params: dict) -> torch.Tensor | float:
    strength = params.get("l1", 0.0)
    if not strength:
        return 0.0
    weights = [p for name, p in model.named_parameters() if name.endswith("weight") and p.dim() > 1]
    return strength * sum(w.abs().sum() for w in weights)

"""Learning-rate schedule dimension: optimizer (SGD+momentum, Adam, AdamW), log-scaled
learning rate, and a schedule stepped once per batch: constant, step decay,
exponential decay, cosine, one-cycle and triangular cyclical."""

from __future__ import annotations

import torch
from torch import nn
from torch.optim import lr_scheduler

from search.spec import ScheduleSpace
from spaces._suggest import suggest_choice, suggest_range


def suggest(trial, bounds: ScheduleSpace) -> dict:
    return {
        "optimizer": suggest_choice(trial, "optimizer", bounds.optimizers),
        "lr": suggest_range(trial, "lr", bounds.lr),
        "schedule": suggest_choice(trial, "schedule", bounds.schedules),
        "batch_size": suggest_choice(trial, "batch_size", bounds.batch_sizes),
    }


def make_optimizer(model: nn.Module, params: dict, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    name, lr = params["optimizer"], params["lr"]
    trainable = [p for p in model.parameters() if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(trainable, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    if name == "adam":
        # Adam's weight_decay is the L2 penalty added to the gradient.
        return torch.optim.Adam(trainable, lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, params: dict, total_steps: int) -> lr_scheduler.LRScheduler:
    name, lr = params["schedule"], params["lr"]
    total_steps = max(int(total_steps), 1)
    if name == "step":
        return lr_scheduler.StepLR(optimizer, step_size=max(total_steps // 3, 1), gamma=0.3)
    if name == "exponential":
        return lr_scheduler.ExponentialLR(optimizer, gamma=0.01 ** (1 / total_steps))  # ends at 1% of lr
    if name == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    if name == "onecycle":
        return lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps)
    if name == "cyclic":
        return lr_scheduler.CyclicLR(
            optimizer,
            base_lr=lr / 10,
            max_lr=lr,
            step_size_up=max(total_steps // 6, 1),
            cycle_momentum=params["optimizer"] == "sgd",
        )
    return lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

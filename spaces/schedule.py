"""Learning-rate schedule dimension: optimizer (SGD+momentum, Adam, AdamW), log-scaled
learning rate, batch size, and a schedule stepped once per batch: constant, step
decay, exponential decay, cosine, one-cycle and triangular cyclical."""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from spaces._config import FloatRange, Strict, choices, suggest_choice, suggest_range
from spaces._lazy import LazyModule, nn, torch
from spaces.dimension import Dimension, SuggestContext, TrialContext, register

# imported on first use, like torch (spaces._lazy)
lr_scheduler = LazyModule("torch.optim.lr_scheduler")


class ScheduleSpace(Strict):
    optimizers: list[Literal["sgd", "adam", "adamw"]] = choices("optimizer", ["sgd", "adam", "adamw"])
    lr: FloatRange = FloatRange(low=3e-4, high=3e-2, log=True)
    schedules: list[Literal["constant", "step", "exponential", "cosine", "onecycle", "cyclic"]] = choices(
        "schedule", ["constant", "step", "exponential", "cosine", "onecycle", "cyclic"]
    )
    batch_sizes: list[int] = choices("batch", [32, 64, 128])

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(b <= 0 for b in value):
            raise ValueError(f"batch sizes must be > 0, but got {value}")
        return value


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


def recipe(params: dict, hooks) -> None:
    """Put the optimizer, schedule and batch size of `params` into training hooks
    (also used for teachers, which train with a fixed recipe)."""
    weight_decay = params.get("weight_decay", 0.0)

    def optimizer(model: nn.Module, lr_scale: float = 1.0) -> torch.optim.Optimizer:
        return make_optimizer(model, {**params, "lr": params["lr"] * lr_scale}, weight_decay)

    def scheduler(opt: torch.optim.Optimizer, total_steps: int, constant: bool = False) -> lr_scheduler.LRScheduler:
        lr = opt.param_groups[0]["lr"]
        return make_scheduler(opt, {**params, "lr": lr, "schedule": "constant" if constant else params["schedule"]}, total_steps)

    hooks.make_optimizer, hooks.make_scheduler = optimizer, scheduler
    hooks.batch_size = int(params["batch_size"])


class Schedule(Dimension):
    name = "schedule"
    config = ScheduleSpace
    order = 20

    def suggest(self, trial, config: ScheduleSpace, ctx: SuggestContext) -> dict:
        return {
            "optimizer": suggest_choice(trial, "optimizer", config.optimizers),
            "lr": suggest_range(trial, "lr", config.lr),
            "schedule": suggest_choice(trial, "schedule", config.schedules),
            "batch_size": suggest_choice(trial, "batch_size", config.batch_sizes),
        }

    def prepare(self, model: nn.Module, params: dict, ctx: TrialContext) -> None:
        recipe(params, ctx.training)

    def recipe(self, params: dict, hooks) -> None:
        recipe(params, hooks)


register(Schedule)

"""The training loop every trial, fine-tune and retrain shares."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from objectives import accuracy, latency
from search.data import TaskData
from spaces import distillation, regularization, schedule


class TrainingDiverged(RuntimeError):
    pass


def train(
    model: nn.Module,
    task: TaskData,
    params: dict,
    epochs: int,
    *,
    seed: int = 0,
    lr_scale: float = 1.0,
    constant_lr: bool = False,
    on_epoch: Callable[[int, float], None] | None = None,
    epoch_hooks: tuple = (),
    teacher: nn.Module | None = None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    yield_to_measurements: bool = True,
) -> nn.Module:
    """Train in place for `epochs`; `on_epoch(epoch, val_accuracy)` after each epoch.

    `lr_scale`/`constant_lr` serve fine-tunes (after pruning, during QAT): a tenth of
    the learning rate, held constant. `epoch_hooks` get `.on_epoch_end(epoch)` (gradual
    pruning). `augment` transforms each training batch's inputs (labels unchanged);
    with a `teacher` and the params' `kd_*` settings the loss is the distillation loss
    (spaces.distillation), the teacher seeing the same augmented batch.
    `yield_to_measurements`: pause between batches while a latency/energy
    measurement runs on this node (objectives.latency.exclusive)."""
    if epochs <= 0:
        return model
    run_params = {**params, "lr": params["lr"] * lr_scale}
    if constant_lr:
        run_params["schedule"] = "constant"
    generator = torch.Generator().manual_seed(seed)
    X, y = torch.from_numpy(task.X_train), torch.from_numpy(task.y_train)
    batch_size = min(int(params["batch_size"]), len(X))
    steps_per_epoch = math.ceil(len(X) / batch_size)
    optimizer = schedule.make_optimizer(model, run_params, params.get("weight_decay", 0.0))
    scheduler = schedule.make_scheduler(optimizer, run_params, epochs * steps_per_epoch)
    loss_fn = regularization.criterion(params)
    distiller = None
    if teacher is not None and distillation.wanted(params):
        distiller = distillation.Distiller(teacher, params).attach(model)
    try:
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(len(X), generator=generator)
            for start in range(0, len(X), batch_size):
                if yield_to_measurements:
                    latency.wait_for_measurements()
                index = order[start : start + batch_size]
                if len(index) < 2:  # batch norm cannot train on one sample
                    continue
                inputs = X[index] if augment is None else augment(X[index])
                logits = model(inputs)
                loss = loss_fn(logits, y[index])
                if distiller is not None:
                    loss = distiller.loss(logits, inputs, loss)
                loss = loss + regularization.l1_penalty(model, params)
                if not torch.isfinite(loss):
                    raise TrainingDiverged(f"training diverged: loss is {loss.item()} at epoch {epoch}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
            for hook in epoch_hooks:
                hook.on_epoch_end(epoch)
            if on_epoch is not None:
                on_epoch(epoch, accuracy.measure(model, task.X_val, task.y_val).value)
    finally:
        if distiller is not None:
            distiller.detach()
    return model.eval()


def calibration_batches(task: TaskData, count: int, batch_size: int = 64, seed: int = 0) -> list[torch.Tensor]:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(task.X_train))
    return [
        torch.from_numpy(task.X_train[order[i : i + batch_size]])
        for i in range(0, min(count * batch_size, len(order)), batch_size)
    ]

"""The training loop every trial, fine-tune, once-per-launch model and retrain shares, and the
contract of a user's own loop.

A user loop (`[train] loop = "my_train.py:fit"`, or `search.launch(train=fit)`) is
called with keywords:

    fit(model=..., train_loader=..., val_loader=..., optimizer=..., scheduler=...,
        epochs=..., report=..., hooks=...)

- `model` is on `hooks.device`; `train_loader`/`val_loader` yield `(inputs, labels)`
  batches (CPU tensors) of the trial's batch size;
- `optimizer` and `scheduler` come from the trial's searched params (optimizer, lr,
  weight decay, learning-rate curve); step the scheduler once per batch (its length is
  `epochs * len(train_loader)` steps);
- `report(epoch, val_accuracy)` after each epoch (epoch counts from 0); it feeds the
  search's per-epoch results;
- `hooks` (spaces.TrainingHooks) carries what the other dimensions need: per batch
  `inputs = hooks.transform(inputs)` (input transforms), `loss = hooks.loss(model,
  inputs, logits, labels)` (criterion, loss wrappers, penalties), `hooks.after_backward(model)`
  after `loss.backward()`, `hooks.pause()` between batches; `hooks.end_epoch(epoch)`
  after each epoch (epoch hooks); `hooks.accuracy(model, val_loader)` measures.

The same loop runs the compress stage's fine-tunes (fewer epochs, a tenth of the
learning rate, a constant learning rate). A hook the trial needs but the loop never
calls fails the trial with a message naming it, so a loop cannot silently drop a
searched dimension.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection

import torch
from torch import nn

import spaces
from objectives import accuracy
from search.tasks.task import Task, loader
from spaces import TrainingHooks


class TrainingDiverged(RuntimeError):
    pass


class _Recording(TrainingHooks):
    """TrainingHooks that remember which of their methods a loop called."""

    def __init__(self, hooks: TrainingHooks):
        super().__init__(**{f.name: getattr(hooks, f.name) for f in dataclasses.fields(hooks)})
        self.used: set[str] = set()

    def transform(self, inputs):
        self.used.add("transform")
        return super().transform(inputs)

    def loss(self, model, inputs, logits, targets):
        self.used.add("loss")
        return super().loss(model, inputs, logits, targets)

    def after_backward(self, model):
        self.used.add("after_backward")
        return super().after_backward(model)

    def end_epoch(self, epoch):
        self.used.add("end_epoch")
        return super().end_epoch(epoch)

    def unused_needs(self) -> list[str]:
        needed = {
            "transform": bool(self.transforms),
            "loss": bool(self.loss_wrappers or self.penalties) or not isinstance(self.criterion, nn.CrossEntropyLoss)
            or getattr(self.criterion, "label_smoothing", 0.0) > 0,
            "after_backward": bool(self.backward_hooks),
            "end_epoch": bool(self.epoch_hooks),
        }
        return [name for name, need in needed.items() if need and name not in self.used]


def evaluate(model: nn.Module, data) -> float:
    """Top-1 accuracy of `model` on a DataLoader (or any iterable of batches)."""
    return accuracy.measure(model, data).value


def fit(
    model: nn.Module,
    task: Task,
    hooks: TrainingHooks,
    epochs: int,
    *,
    seed: int = 0,
    lr_scale: float = 1.0,
    constant_lr: bool = False,
    report: Callable[[int, float], None] | None = None,
    report_epochs: Collection[int] | None = None,
    workers: int = 0,
    loop: Callable | None = None,
) -> nn.Module:
    """Train `model` in place for `epochs` with `hooks` (spaces.TrainingHooks), by the
    user's `loop` where given, else by paretune's own; returns it in eval mode.
    `report(epoch, val_accuracy)` after the epochs in `report_epochs` (1-based; None:
    every epoch); paretune's loop measures validation accuracy only for those."""
    if epochs <= 0:
        return model
    model.to(hooks.device)
    train_loader = loader(task.train, hooks.batch_size, shuffle=True, seed=seed, workers=workers)
    val_loader = loader(task.val, 512, workers=workers)
    if hooks.make_optimizer is None or hooks.make_scheduler is None:
        raise ValueError("training needs an optimizer and a scheduler (a dimension's prepare or recipe sets them)")
    optimizer = hooks.make_optimizer(model, lr_scale)
    scheduler = hooks.make_scheduler(optimizer, epochs * len(train_loader), constant_lr)
    run = _Recording(hooks)
    wanted = None if report_epochs is None else set(report_epochs)
    if report is None or wanted == set():
        report, wanted = None, set()
    with run.attached(model):
        if loop is None:
            _loop(model, train_loader, val_loader, optimizer, scheduler, epochs, report, run, wanted)
        else:
            model.train()
            loop(
                model=model, train_loader=train_loader, val_loader=val_loader, optimizer=optimizer,
                scheduler=scheduler, epochs=epochs, report=_only_at(report, wanted), hooks=run,
            )
            missing = run.unused_needs()
            if missing:
                raise RuntimeError(
                    f"the training loop never called hooks.{missing[0]}(...), which this trial's params need; "
                    "see search/trial/training.py for the loop contract"
                )
    return model.eval()


def _only_at(report: Callable[[int, float], None] | None, wanted: set[int] | None) -> Callable[[int, float], None]:
    """What a user loop calls as `report`: passed on for the wanted epochs (None: all)."""
    def filtered(epoch: int, value: float) -> None:
        if report is not None and (wanted is None or epoch + 1 in wanted):
            report(epoch, value)

    return filtered


def _loop(model, train_loader, val_loader, optimizer, scheduler, epochs, report, hooks: TrainingHooks,
          wanted: set[int] | None = None) -> None:
    device = hooks.device
    for epoch in range(epochs):
        model.train()
        for inputs, targets in train_loader:
            hooks.pause()
            if len(inputs) < 2:  # batch norm cannot train on one sample
                continue
            inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            inputs = hooks.transform(inputs)
            logits = model(inputs)
            loss = hooks.loss(model, inputs, logits, targets)
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"training diverged: loss is {loss.item()} at epoch {epoch}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            hooks.after_backward(model)
            optimizer.step()
            scheduler.step()
        hooks.end_epoch(epoch)
        if report is not None and (wanted is None or epoch + 1 in wanted):  # a validation pass only when reported
            report(epoch, evaluate(model, val_loader))


def recipe_hooks(params: dict, device: torch.device | str = "cpu") -> TrainingHooks:
    """Training hooks of a fixed recipe (the params of the trial's recipe: optimizer,
    learning rate and its curve, batch size, weight decay, label smoothing): each built-in dimension fills in its part
    (`Dimension.recipe`). For models trained once per launch, and tests."""
    hooks = TrainingHooks(device=torch.device(device))
    for dimension in spaces.builtins():
        dimension.recipe(params, hooks)
    return hooks


def train_recipe(model: nn.Module, task: Task, params: dict, epochs: int, seed: int = 0, device="cpu", workers: int = 0) -> float:
    """Train with a fixed recipe; returns the validation accuracy."""
    fit(model, task, recipe_hooks(params, device), epochs, seed=seed, workers=workers)
    return evaluate(model, loader(task.val, 512, workers=workers))

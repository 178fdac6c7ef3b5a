"""The user's code in a search: task factory, model factory, training loop, dimensions.

Each comes from a spec reference (`"my_model.py:build"`, a file relative to the spec;
or `"package.module:build"`, an import) or directly from Python
(`search.launch(spec, model=build)`). `resolve` loads them once, in the driver, and
checks each against its contract, so bad user code stops the launch with one line
naming the key and the file (exit 2), before Ray starts.

The resolved objects travel to the trials by value (Ray's cloudpickle; a module
loaded from a file is registered for pickling by value), so workers never need the
user's files on their disk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

import spaces
from search.core.errors import UsageError
from search.core.spec import StudySpec, TaskSource, describe_error
from search.tasks import tabular_bench
from search.tasks.references import checked_callable, load_reference, reference_of


@dataclass
class Plugins:
    """The user's code a search runs (None/empty: paretune's own)."""

    task: Callable | None = None  # make(seed) -> search.Task
    model: Callable | None = None  # build(params, input_shape, n_classes) -> nn.Module
    train: Callable | None = None  # fit(model, train_loader, val_loader, optimizer, scheduler, epochs, report, hooks)
    dimensions: tuple[spaces.Dimension, ...] = field(default_factory=tuple)
    weights: dict | None = None  # `[model] weights`, loaded once (search.tasks.weights)


def _dimension(value: Any, text: str, key: str) -> spaces.Dimension:
    instance = value() if isinstance(value, type) else value
    try:
        return spaces.check_dimension(instance)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{key}: {text}: {exc}") from None


def check_sections(spec: StudySpec, dimensions: tuple[spaces.Dimension, ...], source: str) -> None:
    """User dimensions' sections validate against their configs; no section is left unowned."""
    builtin = {d.name for d in spaces.builtins()}
    seen: set[str] = set()
    for dimension in dimensions:
        if dimension.name in builtin or dimension.name in seen or dimension.name == "custom":
            raise UsageError(f"{source}: space.custom: a dimension is already named {dimension.name!r}; rename it")
        seen.add(dimension.name)
        try:
            spaces.section(spec, dimension)
        except ValidationError as exc:
            raise UsageError(f"{source}: {describe_error(exc.errors()[0], f'space.{dimension.name}')}") from None
    unowned = sorted(set(spec.space.model_extra or {}) - seen)
    if unowned:
        raise UsageError(f"{source}: space.{unowned[0]}: unknown field (no dimension of that name)")


def resolve(
    spec: StudySpec,
    *,
    task: Callable | None = None,
    model: Callable | None = None,
    train: Callable | None = None,
    dimensions: tuple | list = (),
    source: str = "spec",
) -> Plugins:
    """Load what the spec references (or take what is passed) and check it."""
    if task is None and isinstance(spec.task, TaskSource) and spec.task.factory is not None:
        task = checked_callable(load_reference(spec.task.factory, "task.factory"), spec.task.factory, "task.factory")
    if model is None and spec.model_factory is not None:
        model = checked_callable(load_reference(spec.model.factory, "model.factory"), spec.model.factory, "model.factory")
    if train is None and spec.train.loop is not None:
        train = checked_callable(load_reference(spec.train.loop, "train.loop"), spec.train.loop, "train.loop")
    resolved = [_dimension(d, type(d).__name__ if not isinstance(d, type) else d.__name__, "dimensions") for d in dimensions]
    given = {reference_of(d if isinstance(d, type) else type(d)) for d in dimensions}
    for text in spec.space.custom.dimensions:
        if text in given:  # passed as an object too (search.launch records its reference)
            continue
        resolved.append(_dimension(load_reference(text, "space.custom.dimensions"), text, "space.custom.dimensions"))
    loaded = None
    if spec.weights is not None:
        from search.tasks import weights  # deferred: imports torch, which reading a spec never needs

        loaded = weights.load(spec.weights)
    plugins = Plugins(task=task, model=model, train=train, dimensions=tuple(resolved), weights=loaded)
    check_sections(spec, plugins.dimensions, source)
    return plugins


def task_from_factory(spec: StudySpec, factory: Callable | None = None):
    """`make(seed)` of the spec's task factory, checked against the Task contract."""
    import torch  # deferred: reading a spec never needs torch

    from search.tasks.task import Task  # deferred: imports torch

    key = "task.factory"
    text = spec.task.factory if isinstance(spec.task, TaskSource) and spec.task.factory else "task="
    if factory is None:
        factory = checked_callable(load_reference(text, key), text, key)
    try:
        task = factory(spec.seed)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's code failed: say where
        raise UsageError(f"{key}: {text} raised: {spaces.first_line(exc)}") from None
    if not isinstance(task, Task):
        raise UsageError(f"{key}: {text} returned {type(task).__name__}, not a search.Task")
    if task.n_classes < 2:
        raise UsageError(f"{key}: {text}: n_classes is {task.n_classes}; a classification task needs at least 2")
    for split in ("train", "val", "test"):
        dataset = getattr(task, split)
        try:
            size = len(dataset)
        except TypeError:
            raise UsageError(f"{key}: {text}: Task.{split} has no len(); give a map-style torch Dataset") from None
        if size == 0:
            raise UsageError(f"{key}: {text}: Task.{split} is empty")
        try:
            x, y = dataset[0]
        except Exception as exc:  # noqa: BLE001
            raise UsageError(f"{key}: {text}: Task.{split}[0] is not an (input, label) pair ({spaces.first_line(exc)})") from None
        if not isinstance(x, torch.Tensor) or tuple(x.shape) != tuple(task.input_shape):
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise UsageError(f"{key}: {text}: Task.{split}[0] input is {shape}, but input_shape is {tuple(task.input_shape)}")
        label = int(y)
        if not 0 <= label < task.n_classes:
            raise UsageError(f"{key}: {text}: Task.{split}[0] label {label} is outside [0, {task.n_classes})")
    if task.metrics is not None and not callable(task.metrics):
        raise UsageError(f"{key}: {text}: Task.metrics is a {type(task.metrics).__name__}, not callable")
    return task


def dimensions(plugins: Plugins | None = None) -> list[spaces.Dimension]:
    """Every dimension a search may use: the built-ins and the user's."""
    return [*spaces.builtins(), *(plugins.dimensions if plugins else ())]


def suggest_context(spec: StudySpec, task_kind: str, plugins: Plugins | None = None) -> spaces.SuggestContext:
    user_model = spec.model_factory is not None or (plugins is not None and plugins.model is not None)
    return spaces.SuggestContext(task_kind, user_model=user_model)


def suggest_params(
    trial, spec: StudySpec, task_kind: str, plugins: Plugins | None = None, *, baseline: bool = False,
    owners: dict | None = None,
) -> dict:
    """A trial's params: every active dimension asked in turn (a lookup-table task has
    its own fixed space, search.tasks.tabular_bench). `baseline` and `owners`: see
    `spaces.suggest`."""
    if task_kind == "table":
        return tabular_bench.suggest(trial)
    return spaces.suggest(
        trial, spec, dimensions(plugins), suggest_context(spec, task_kind, plugins), baseline=baseline, owners=owners
    )


def describe_params(params: dict, spec: StudySpec, task_kind: str, plugins: Plugins | None = None) -> str:
    """A trial's model in a few words (`cnn/structured 0.42/static`)."""
    if task_kind == "table":
        return " ".join(f"{k}={v}" for k, v in params.items())
    return spaces.describe(params, spec, dimensions(plugins), suggest_context(spec, task_kind, plugins))

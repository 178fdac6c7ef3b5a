"""One trial: every dimension of the space, in pipeline order, then the measurements.

```
build (the one build dimension) -> prepare (each dimension adds to the training
hooks) -> train (paretune's loop or the user's) -> compress (the compress-stage
dimensions, in order) -> deploy (the deploy-stage ones) -> measure -> record (each
dimension's facts) -> one TrialMetrics record
```

Nothing here names a dimension: each one's params take effect through its hooks
(spaces.dimension), and what it records about the deployed model joins the metrics.

`run_pipeline` is plain Python (tests, `paretune train` and the preflight call it);
`trainable` wraps it for Ray Tune: it reports validation accuracy each epoch and the
final metrics once, and turns an exception inside the trial into a reported failure
(stored as FAIL with its reason), so one bad trial never stops the search.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import time
from collections.abc import Collection
from dataclasses import dataclass

import torch
from torch import nn

import spaces
from objectives import complexity, latency
from search.core.spec import StudySpec
from search.tasks import tabular_bench, weights
from search.tasks.plugins import Plugins, dimensions, resolve
from search.tasks.task import Task, calibration_batches, example_inputs, workers_for
from search.trial import hardware, placement, timing
from search.trial.measurement import macs_by_precision, measure_device
from search.trial.metrics import TrialMetrics
from search.trial.training import fit, train_recipe


@dataclass
class PipelineResult:
    model: nn.Module | None  # the deployable model, as the compress stage left it
    float_model: nn.Module | None  # the same model before a compress step changed its precision
    metrics: TrialMetrics | dict  # a dict only for a lookup-table task
    # What latency, energy and accuracy were measured on: the model as the deploy stage
    # left it (e.g. a compiled module or an inference session); `model` where it left it as is.
    runner: nn.Module | None = None


def train_device(spec: StudySpec) -> torch.device:
    """CUDA when the trial asked for a GPU and has one; the CPU otherwise."""
    if spec.resources.gpus_per_trial > 0 and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def trial_context(
    params: dict, task: Task, spec: StudySpec, seed: int, plugins: Plugins, shared: dict | None = None
) -> spaces.TrialContext:
    """The typed context every dimension's prepare/apply sees in one trial."""
    device = train_device(spec)
    workers = workers_for(task, spec)
    study = spaces.StudyContext(
        spec, task, lambda model, recipe, epochs, run_seed: train_recipe(model, task, recipe, epochs, run_seed, device, workers)
    )
    calibration_count = spaces.calibration_batches(spec, dimensions(plugins))
    ctx = spaces.TrialContext(
        spec=spec,
        task=task,
        params=params,
        seed=seed,
        example=example_inputs(task.train),
        fit=lambda *a, **k: None,  # set below: it needs the finished hooks
        calibration=functools.cache(
            lambda: calibration_batches(task, max(calibration_count, 1), seed=seed, workers=workers)
        ),
        study=study,
        user_model=plugins.model,
        shared=dict(shared or {}),
        device=device,
        # Between batches training waits while a measurement on this node runs (a wait, not training time).
        training=spaces.TrainingHooks(pause=timing.waited("wait", latency.wait_for_measurements), device=device),
    )

    def fine_tune(model: nn.Module, epochs: int, *, lr_scale: float = 0.1, constant_lr: bool = True, seed_offset: int = 1):
        # Fine-tunes (the compress stage's) train like the trial, without its epoch
        # hooks (those belong to the main training only).
        hooks = dataclasses.replace(ctx.training, epoch_hooks=[])
        return fit(model, task, hooks, epochs, seed=seed + seed_offset, lr_scale=lr_scale, constant_lr=constant_lr,
                   workers=workers, loop=plugins.train)

    ctx.fit = fine_tune
    return ctx


def build_model(params: dict, ctx: spaces.TrialContext, active: list[spaces.Dimension]) -> nn.Module:
    builders = [d for d in active if d.stage == "build"]
    if len(builders) != 1:
        raise RuntimeError(f"exactly one dimension must build the model, but got {[d.name for d in builders]}")
    return builders[0].apply(None, params, ctx)


def training_epochs(spec: StudySpec) -> int:
    """Epochs of the main training: none when the search starts from trained weights
    (search.tasks.weights); `budget.epochs` then bounds the fine-tunes."""
    return 0 if spec.weights is not None else spec.budget.epochs


def build_and_train(
    params: dict, task: Task, spec: StudySpec, seed: int, on_epoch=None, *, plugins: Plugins | None = None,
    shared: dict | None = None, report_epochs: Collection[int] | None = None,
) -> tuple[nn.Module, spaces.TrialContext, list[spaces.Dimension]]:
    """Build (loading `[model] weights` where given) and train; returns the trained
    model, the trial context and the active dimensions. `on_epoch(epoch,
    val_accuracy)` after the epochs in `report_epochs` (1-based; None: every epoch)."""
    if plugins is None:  # a direct call: what the spec references
        plugins = resolve(spec)
    active = spaces.active(dimensions(plugins), spaces.SuggestContext(task.kind, user_model=spec.model_factory is not None or plugins.model is not None))
    torch.manual_seed(seed)
    ctx = trial_context(params, task, spec, seed, plugins, shared)
    started = time.perf_counter()
    with timing.phase("build"):
        model = build_model(params, ctx, active)
        if plugins.weights is not None:
            weights.apply(model, plugins.weights)
            ctx.loaded_model = weights.frozen(model).to(ctx.device)
        model = model.to(ctx.device)
        for dimension in active:
            dimension.prepare(model, params, ctx)
    torch.manual_seed(seed)  # the same training randomness whatever `prepare` drew from the generator
    with timing.phase("train"):
        fit(model, task, ctx.training, training_epochs(spec), seed=seed, report=on_epoch, report_epochs=report_epochs,
            workers=workers_for(task, spec), loop=plugins.train)
    ctx.info["train_seconds"] = time.perf_counter() - started
    return model, ctx, active


def build_and_compress(
    params: dict, task: Task, spec: StudySpec, seed: int, on_epoch=None, *, plugins: Plugins | None = None,
    shared: dict | None = None, report_epochs: Collection[int] | None = None,
) -> tuple[nn.Module, spaces.TrialContext, list[spaces.Dimension]]:
    """Build, train and compress; returns the compressed model, the trial context
    (ctx.float_model, ctx.info) and the active dimensions (see `build_and_train`)."""
    model, ctx, active = build_and_train(
        params, task, spec, seed, on_epoch, plugins=plugins, shared=shared, report_epochs=report_epochs
    )
    started = time.perf_counter()
    with timing.phase("compress"):
        torch.manual_seed(seed + 1)  # the same start for a variant compressed beside others (search.trial.variants)
        model = compress(model, params, ctx, active)
    ctx.info["train_seconds"] += time.perf_counter() - started
    return model, ctx, active


def compress(model: nn.Module, params: dict, ctx: spaces.TrialContext, active: list[spaces.Dimension]) -> nn.Module:
    """The compress stage (each compress dimension in order); records the float
    model's MACs and parameter count in ctx.info."""
    for dimension in active:
        if dimension.stage == "compress":
            model = dimension.apply(model, params, ctx)
    float_model = ctx.float_model if ctx.float_model is not None else model
    macs = complexity.count_macs(float_model, ctx.example)
    ctx.info.update({
        "macs": int(sum(macs.values())),
        "macs_by_precision": macs_by_precision(macs, ctx.info.get("precision_kinds", {})),
        "float_params": complexity.count_params(float_model)[0],
    })
    return model.eval()


def deploy(model: nn.Module, params: dict, ctx: spaces.TrialContext, active: list[spaces.Dimension]) -> nn.Module:
    """The deployable model on its measurement device, as the deploy stage brings it."""
    device = measure_device(ctx.spec)
    model = model.to(device)
    if ctx.float_model is not None:
        ctx.float_model = ctx.float_model.to(device)
    ctx.example = ctx.example.to(device)
    runner = model
    for dimension in active:
        if dimension.stage == "deploy":
            runner = dimension.apply(runner, params, ctx)
    return runner


def run_pipeline(
    params: dict,
    task: Task,
    spec: StudySpec,
    seed: int,
    on_epoch=None,
    split: str = "val",
    *,
    shared: dict | None = None,
    plugins: Plugins | None = None,
    report_epochs: Collection[int] | None = None,
) -> PipelineResult:
    """Run one trial's config. `shared`: the launch's `prepare_study` results by
    dimension name (e.g. a model trained once), shipped once to the workers; `plugins`:
    the user's model factory, training loop and dimensions; `on_epoch` is called after
    the epochs in `report_epochs` (see `build_and_compress`). Its phases go to the
    thread's `search.trial.timing` record, if one is open."""
    if task.kind == "table":  # a tabular benchmark: the recorded metrics are the result
        return PipelineResult(None, None, tabular_bench.lookup(params))
    torch.set_num_threads(max(1, int(spec.resources.cpus_per_trial)))
    model, ctx, active = build_and_compress(
        params, task, spec, seed, on_epoch, plugins=plugins, shared=shared, report_epochs=report_epochs
    )
    return deploy_and_measure(model, params, ctx, active, split)


def deploy_and_measure(
    model: nn.Module, params: dict, ctx: spaces.TrialContext, active: list[spaces.Dimension], split: str = "val"
) -> PipelineResult:
    """The deploy and measure stages of a compressed model."""
    with timing.phase("deploy"):
        runner = deploy(model, params, ctx, active)
    with timing.phase("measure"):
        # On this node, or on one carrying `resources.measure_on` (search.trial.placement).
        metrics = placement.measure(model, runner, ctx.task, ctx.spec, ctx.info, split)
    # What each dimension records about the deployed model (search.trial.metrics: `facts`).
    metrics = metrics.update(
        **spaces.record(model, runner, params, ctx, active), train_device=str(ctx.device), **hardware.describe()
    )
    return PipelineResult(model, ctx.float_model if ctx.float_model is not None else model, metrics, runner)


def run_group(
    members: list[dict | None], task: Task, spec: StudySpec, seed: int, on_epoch=None, *, shared: dict | None = None,
    plugins: Plugins | None = None, report_epochs: Collection[int] | None = None,
) -> list[PipelineResult | Exception | None]:
    """One training, then each member's post-training steps (search.trial.variants) on a copy
    of the trained model: compress, deploy, measure. `members` are the params of the
    trials sharing the training (None: a member to skip, e.g. infeasible); each gets
    its result, or the exception that ended its own steps. Each member starts its steps
    from the same state a single trial would (`build_and_compress`), so retraining any
    member alone gives the same model."""
    first = next(p for p in members if p is not None)
    torch.set_num_threads(max(1, int(spec.resources.cpus_per_trial)))
    trained, ctx, active = build_and_train(
        first, task, spec, seed, on_epoch, plugins=plugins, shared=shared, report_epochs=report_epochs
    )
    results: list[PipelineResult | Exception | None] = []
    for params in members:
        if params is None:
            results.append(None)
            continue
        started = time.perf_counter()
        try:
            model = copy.deepcopy(trained)  # each member's steps act on a copy; `trained` stays as trained
            member = dataclasses.replace(ctx, params=params, info=dict(ctx.info), float_model=None, example=ctx.example.cpu())
            with timing.phase("compress"):
                torch.manual_seed(seed + 1)
                model = compress(model, params, member, active)
            member.info["train_seconds"] += time.perf_counter() - started
            results.append(deploy_and_measure(model, params, member, active))
        except Exception as exc:  # noqa: BLE001 - one member's failure is its own
            results.append(exc)
    return results



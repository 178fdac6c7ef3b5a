"""One trial: every dimension of the space, in pipeline order, then the measurements.

```
build (architecture | the user's model) -> prepare (each dimension adds to the
training hooks) -> train (paretune's loop or the user's) -> compress (pruning +
fine-tune, quantization) -> deploy (runtime) -> measure -> one TrialMetrics record
```

`run_pipeline` is plain Python (tests, `paretune train` and the preflight call it);
`trainable` wraps it for Ray Tune: it reports validation accuracy each epoch and the
final metrics once, and turns an exception inside the trial into a reported failure
(stored as FAIL with its reason), so one bad trial never stops the search.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import time
import traceback
from collections.abc import Collection
from dataclasses import dataclass

import torch
from torch import nn

import spaces
from objectives import accuracy, complexity, energy, latency
from search import hardware, placement, timing, variants, weights
from search.data import Task, calibration_batches, example_inputs, loader, workers_for
from search.metrics import TrialMetrics
from search.plugins import Plugins, dimensions
from search.spec import StudySpec
from search.training import fit, train_recipe


@dataclass
class PipelineResult:
    model: nn.Module | None  # the deployable model (int8 where quantized)
    float_model: nn.Module | None  # the same model before quantization
    metrics: TrialMetrics | dict  # a dict only for a lookup-table task
    # What latency, energy and accuracy were measured on: the model on the trial's
    # runtime (TorchScript module, ONNX Runtime session); `model` itself for eager.
    runner: nn.Module | None = None


def train_device(spec: StudySpec) -> torch.device:
    """CUDA when the trial asked for a GPU and has one; the CPU otherwise."""
    if spec.resources.gpus_per_trial > 0 and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def measure_device(spec: StudySpec) -> torch.device:
    return torch.device("cuda") if spec.measure.device == "cuda" else torch.device("cpu")


def macs_by_precision(macs: dict[str, int], int8_kinds: tuple[str, ...]) -> dict[str, int]:
    """MACs split by the precision they run in (the quantization dimension records
    which layer kinds run in int8)."""
    int8 = sum(macs[k] for k in int8_kinds)
    out = {"fp32": sum(macs.values()) - int8}
    if int8:
        out["int8"] = int8
    return out


def trial_context(
    params: dict, task: Task, spec: StudySpec, seed: int, plugins: Plugins, shared: dict | None = None
) -> spaces.TrialContext:
    """The typed context every dimension's prepare/apply sees in one trial."""
    device = train_device(spec)
    workers = workers_for(task, spec)
    study = spaces.StudyContext(
        spec, task, lambda model, recipe, epochs, run_seed: train_recipe(model, task, recipe, epochs, run_seed, device, workers)
    )
    ctx = spaces.TrialContext(
        spec=spec,
        task=task,
        params=params,
        seed=seed,
        example=example_inputs(task.train),
        fit=lambda *a, **k: None,  # set below: it needs the finished hooks
        calibration=functools.cache(
            lambda: calibration_batches(task, spec.space.quantization.calibration_batches, seed=seed, workers=workers)
        ),
        study=study,
        user_model=plugins.model,
        shared=dict(shared or {}),
        device=device,
        # Between batches training waits while a measurement on this node runs (a wait, not training time).
        training=spaces.TrainingHooks(pause=timing.waited("wait", latency.wait_for_measurements), device=device),
    )

    def fine_tune(model: nn.Module, epochs: int, *, lr_scale: float = 0.1, constant_lr: bool = True, seed_offset: int = 1):
        # Fine-tunes (after pruning, during QAT) train like the trial, without its epoch
        # hooks (gradual pruning belongs to the main training only).
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
    (search.weights); `budget.epochs` then bounds the fine-tunes."""
    return 0 if spec.weights is not None else spec.budget.epochs


def build_and_train(
    params: dict, task: Task, spec: StudySpec, seed: int, on_epoch=None, *, plugins: Plugins | None = None,
    shared: dict | None = None, report_epochs: Collection[int] | None = None,
) -> tuple[nn.Module, spaces.TrialContext, list[spaces.Dimension]]:
    """Build (loading `[model] weights` where given) and train; returns the trained
    model, the trial context and the active dimensions. `on_epoch(epoch,
    val_accuracy)` after the epochs in `report_epochs` (1-based; None: every epoch)."""
    if plugins is None:  # a direct call: what the spec references
        from search.plugins import resolve

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
    torch.manual_seed(seed)  # the same training randomness whether or not a teacher was trained just now
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
        torch.manual_seed(seed + 1)  # the same start for a variant compressed beside others (search.variants)
        model = compress(model, params, ctx, active)
    ctx.info["train_seconds"] += time.perf_counter() - started
    return model, ctx, active


def compress(model: nn.Module, params: dict, ctx: spaces.TrialContext, active: list[spaces.Dimension]) -> nn.Module:
    """The compress stage (pruning + fine-tune, quantization); records the float
    model's MACs and parameter count in ctx.info."""
    for dimension in active:
        if dimension.stage == "compress":
            model = dimension.apply(model, params, ctx)
    float_model = ctx.float_model if ctx.float_model is not None else model
    macs = complexity.count_macs(float_model, ctx.example)
    ctx.info.update({
        "macs": int(sum(macs.values())),
        "macs_by_precision": macs_by_precision(macs, ctx.info.get("int8_kinds", ())),
        "float_params": complexity.count_params(float_model)[0],
    })
    return model.eval()


def deploy(model: nn.Module, params: dict, ctx: spaces.TrialContext, active: list[spaces.Dimension]) -> nn.Module:
    """The deployable model on its measurement device and runtime (the deploy stage)."""
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


def task_metrics(task: Task, runner: nn.Module, batches) -> dict[str, float]:
    """The task's own metrics of the deployed model (empty without `Task.metrics`)."""
    if task.metrics is None:
        return {}
    values = task.metrics(runner, batches)
    if not isinstance(values, dict):
        raise TypeError(f"Task.metrics returned {type(values).__name__}, not a dict of numbers")
    return {str(k): float(v) for k, v in values.items()}


def measure(
    model: nn.Module, task: Task, spec: StudySpec, info: dict, split: str = "val", *, runner: nn.Module | None = None,
    score: bool = True,
) -> TrialMetrics:
    """Objectives of the deployable `model`; latency, energy and accuracy run on
    `runner` (the model on its runtime) where given. Parameter counts come from the
    torch model; the size is the runtime's own artifact where it has one (ONNX).
    `score=False` skips accuracy and the task's metrics (NaN, none): an untrained
    model's (search.feasibility)."""
    settings = spec.measure
    runner = model if runner is None else runner
    dataset = task.val if split == "val" else task.test
    total_params, nonzero_params = complexity.count_params(model)
    artifact = spaces.runtime.artifact_kb(runner)
    size = complexity.size_kb(model) if artifact is None else artifact
    device = str(measure_device(spec))
    example = torch.rand(settings.batch_size, *task.input_shape, device=device)
    started = time.perf_counter()
    with contextlib.ExitStack() as held:
        with timing.waiting("wait"):  # another trial's measurement on this node
            held.enter_context(latency.exclusive())
        held.enter_context(latency.torch_threads(settings.threads))
        speed = latency.measure(
            runner,
            task.input_shape,
            threads=settings.threads,
            batch_size=settings.batch_size,
            warmup=settings.warmup,
            repeats=settings.repeats,
            device=device,
        )

        def run_once() -> None:
            with torch.inference_mode():
                runner(example)

        power = energy.measure(
            run_once,
            latency_ms=speed.value,
            macs_by_precision={k: v * settings.batch_size for k, v in info["macs_by_precision"].items()},
            weight_bytes=size * 1024,
            static_power_w=settings.static_power_w,
            powercap_root=settings.powercap_root,
            device=device,
        )
    batches = loader(dataset, 512, workers=workers_for(task, spec)) if score else None
    gmac_per_s = info["macs"] * settings.batch_size / (speed.value * 1e6) if speed.value > 0 else 0.0
    return TrialMetrics(
        accuracy=accuracy.measure(runner, batches).value if score else float("nan"),
        latency_ms=speed.value,
        latency_p90_ms=speed.detail["p90_ms"],
        energy_mj=power.value,
        energy_source=power.source,
        size_kb=size,
        params=info["float_params"],
        nonzero_params=nonzero_params,
        sparsity=1 - nonzero_params / max(total_params, 1),
        macs=info["macs"],
        quantized=spaces.quantization.is_quantized(model),
        latency_source=speed.source,
        measure_device=device,
        measure_threads=settings.threads,
        measure_batch_size=settings.batch_size,
        runtime="eager",
        gmac_per_s=gmac_per_s,
        int8_kernels=spaces.runtime.int8_kernels(runner),
        train_seconds=info.get("train_seconds", 0.0),
        measure_seconds=time.perf_counter() - started,
        split=split,
        teacher_source=info.get("teacher_source"),
        task_metrics=task_metrics(task, runner, batches) if score else {},
    )


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
    dimension name (the distillation teacher), shipped once to the workers; `plugins`:
    the user's model factory, training loop and dimensions; `on_epoch` is called after
    the epochs in `report_epochs` (see `build_and_compress`). Its phases go to the
    thread's `search.timing` record, if one is open."""
    if task.kind == "table":  # a tabular benchmark: the recorded metrics are the result
        from search import tabular_bench

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
        # On this node, or on one carrying `resources.measure_on` (search.placement).
        metrics = placement.measure(model, runner, ctx.task, ctx.spec, ctx.info, split)
    metrics = metrics.update(
        runtime=params.get("runtime", "eager"), train_device=str(ctx.device), **hardware.describe()
    )
    return PipelineResult(model, ctx.float_model if ctx.float_model is not None else model, metrics, runner)


def run_group(
    members: list[dict | None], task: Task, spec: StudySpec, seed: int, on_epoch=None, *, shared: dict | None = None,
    plugins: Plugins | None = None, report_epochs: Collection[int] | None = None,
) -> list[PipelineResult | Exception | None]:
    """One training, then each member's post-training steps (search.variants) on a copy
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


def report_epochs(spec: StudySpec) -> tuple[int, ...]:
    """The epochs (1-based) whose validation accuracy a trial reports to Tune: the rung
    epochs of MO-ASHA, none without early stopping. A report is a round trip to the
    search's event loop (the trial waits for it) and a validation pass; nothing else
    reads per-epoch results."""
    if spec.stopping == "none":
        return ()
    from search.moasha import milestones

    rungs = milestones(spec.budget.grace_epochs, spec.budget.reduction_factor, spec.budget.epochs)
    # "auto" also hears the last epoch: the trained accuracy its rungs are trusted on (search.rung_trust).
    return (*rungs, spec.budget.epochs) if spec.stopping == "auto" else tuple(rungs)


def trainable(config: dict, task: Task, spec: StudySpec, shared: dict | None = None, plugins: Plugins | None = None) -> None:
    """Ray Tune function trainable. `config` = {"params", "seed", "number"} from the
    searcher; `shared` and `plugins` travel like `task` through `tune.with_parameters`,
    so each sits once in the object store.

    Where the spec has a constraint that can be judged before training, or searches
    with MO-ASHA, the trial first measures its untrained final form
    (search.feasibility): infeasible, it reports `prune_reason` and stops there;
    otherwise every result carries those values (`pretrain_*`), the static part of
    MO-ASHA's rung vectors. The last result carries the trial's phases
    (`search.timing`)."""
    from ray import tune

    from search import feasibility
    from search.pruned import EPOCH_ATTR, REASON_ATTR

    before: dict = {}
    worker_start = time.time()

    def report_epoch(epoch: int, val_accuracy: float) -> None:
        with timing.waiting("report"):
            tune.report({"epoch": epoch + 1, "val_accuracy": val_accuracy, **before})

    def last(result: dict) -> None:
        marks = {"worker_start": worker_start, "worker_end": time.time()}
        # As JSON text: Tune flattens nested dicts of a result before the searcher sees it.
        tune.report({**result, timing.ATTR: json.dumps({"phases": timeline.as_dict(), "marks": marks})})

    with timing.record() as timeline:
        if config.get(variants.KEY):
            return last(_run_group_results(config, task, spec, shared, plugins, report_epoch, before))
        try:
            if feasibility.needed(spec, task.kind):
                with timing.phase("check"):
                    torch.set_num_threads(max(1, int(spec.resources.cpus_per_trial)))
                    verdict = feasibility.check(config["params"], task, spec, config["seed"], plugins=plugins, shared=shared)
                if verdict.reason is not None:
                    return last({REASON_ATTR: verdict.reason, EPOCH_ATTR: 0, **verdict.result()})
                before = verdict.result()
            result = run_pipeline(config["params"], task, spec, config["seed"], on_epoch=report_epoch, shared=shared,
                                  plugins=plugins, report_epochs=report_epochs(spec))
        except Exception as exc:  # noqa: BLE001 - recorded as the trial's failure reason
            return last(_failure(exc))
        metrics = result.metrics.to_result() if isinstance(result.metrics, TrialMetrics) else result.metrics
        last({**metrics, **before, "done": True})


def _failure(exc: BaseException) -> dict:
    return {"fail_reason": spaces.first_line(exc)[:500], "traceback": traceback.format_exc()[-2000:]}


def _run_group_results(config: dict, task: Task, spec: StudySpec, shared, plugins, report_epoch, before: dict) -> dict:
    """A training and its variants (search.variants): the training trial's result, with
    each variant's result under `variants.KEY`. A member infeasible before training is
    left out of the group's steps (its result says why); the group trains if any member
    is feasible, and reports the pre-training values of its first feasible member
    (into `before`, which its epoch reports carry)."""
    from search import feasibility
    from search.pruned import EPOCH_ATTR, REASON_ATTR

    members = [config["params"]] + [v["params"] for v in config[variants.KEY]]
    outcomes: list[dict | None] = [None] * len(members)
    befores: list[dict] = [{} for _ in members]

    def packed() -> dict:
        numbers = [v["number"] for v in config[variants.KEY]]
        return {**outcomes[0], variants.KEY: variants.encode([{"number": n, **o} for n, o in zip(numbers, outcomes[1:])])}

    try:
        if feasibility.needed(spec, task.kind):
            with timing.phase("check"):
                torch.set_num_threads(max(1, int(spec.resources.cpus_per_trial)))
                for i, params in enumerate(members):
                    verdict = feasibility.check(params, task, spec, config["seed"], plugins=plugins, shared=shared)
                    if verdict.reason is not None:
                        outcomes[i] = {REASON_ATTR: verdict.reason, EPOCH_ATTR: 0, **verdict.result()}
                    else:
                        befores[i] = verdict.result()
            if all(o is not None for o in outcomes):
                return packed()
            before.update(next(b for o, b in zip(outcomes, befores) if o is None))
        results = run_group([p if o is None else None for p, o in zip(members, outcomes)], task, spec, config["seed"],
                            on_epoch=report_epoch, shared=shared, plugins=plugins, report_epochs=report_epochs(spec))
    except Exception as exc:  # noqa: BLE001 - the shared training failed: every member with it
        failure = _failure(exc)
        outcomes = [o if o is not None else failure for o in outcomes]
        return packed()
    for i, result in enumerate(results):
        if outcomes[i] is not None:
            continue
        if isinstance(result, Exception):
            outcomes[i] = {"fail_reason": spaces.first_line(result)[:500]}
        else:
            outcomes[i] = {**result.metrics.to_result(), **befores[i], "done": True}
    return packed()

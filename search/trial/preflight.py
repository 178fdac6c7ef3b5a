"""Preflight: before Ray starts, dry-run every enabled choice on a real model.

The driver builds the model with the space's default params (the low end of each
range, the first of each list of choices; one model per variant the build dimension
names, `Dimension.preflight_models`) and asks every dimension to try each of its
enabled choices on it (`Dimension.preflight`). A choice that cannot work on the model
stops the launch with one line naming the spec key, the choice and the reason (exit
2), unless the user asks to drop unsupported choices: then the search runs without
them and says so.

Also checked here, with the same model: the user's model factory keeps its contract
(a module whose output is N×n_classes), and a user task's metrics() returns every
task metric the spec names as an objective or constraint.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch.utils.data import Subset

import spaces
from search.core.errors import UsageError
from search.core.spec import StudySpec, from_dict, to_toml_dict
from search.tasks import baseline, weights
from search.tasks.plugins import Plugins, dimensions, suggest_context, suggest_params
from search.tasks.task import Task, loader
from search.trial.measurement import task_metrics
from search.trial.pipeline import build_model, trial_context

METRIC_SAMPLES = 64  # task metrics are checked on this many validation samples


class _Defaults(spaces.DefaultTrial):
    """The space's defaults, with some params fixed (one model variant)."""

    def __init__(self, fixed: dict):
        super().__init__()
        self.params.update(fixed)


@dataclass
class PreflightReport:
    spec: StudySpec  # the spec the search runs: unsupported choices dropped where asked
    task_kind: str = "image"
    checks: list[spaces.Check] = field(default_factory=list)
    dropped: list[spaces.Check] = field(default_factory=list)
    models: list[str] = field(default_factory=list)  # the models it tried, in words
    # (spec key, choice) where dropping left no choice and the key's fallback is searched
    fallbacks: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    refused: bool = False  # some choice cannot work and dropping was not asked for

    @property
    def failed(self) -> list[spaces.Check]:
        return [c for c in self.checks if not c.ok]

    def check(self) -> None:
        """Raise the one-line UsageError for the first unsupported choice, if refused."""
        if not self.refused:
            return
        first, *rest = self.failed
        more = f" (also: {', '.join(f'{c.key} {c.choice!r}' for c in rest)})" if rest else ""
        raise UsageError(
            f"preflight: {first.key} {first.choice!r} cannot work on this model: {first.detail}{more}; "
            "remove it from the spec or pass --drop-unsupported"
        )


def _variants(spec: StudySpec, task: Task, plugins: Plugins) -> list[dict]:
    """Default params of each model to try: one per variant the active dimensions name
    (`Dimension.preflight_models`), or the defaults alone."""
    ctx = suggest_context(spec, task.kind, plugins)
    fixed = [
        variant for dimension in spaces.active(dimensions(plugins), ctx)
        for variant in dimension.preflight_models(spaces.section(spec, dimension), ctx)
    ]
    return [suggest_params(_Defaults(f), spec, task.kind, plugins) for f in fixed or [{}]]


def _build(params: dict, ctx: spaces.TrialContext, active: list[spaces.Dimension], spec: StudySpec, task: Task):
    key = f"model.factory {spec.model.factory}" if spec.model_factory is not None else "model"
    try:
        model = build_model(params, ctx, active).eval()
        with torch.no_grad():
            out = model(ctx.example)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's model failed: say where
        raise UsageError(f"{key}: building or running the model with {_short(params)} failed: {spaces.first_line(exc)}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(ctx.example), task.n_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UsageError(f"{key}: the model returns {got} for a batch of {len(ctx.example)}; expected logits ({len(ctx.example)}, {task.n_classes})")
    return model


def _short(params: dict) -> str:
    return "{" + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in list(params.items())[:6]) + ", ...}"


def _check_task_metrics(spec: StudySpec, task: Task, model) -> None:
    wanted = [c.objective for c in spec.constraints if c.objective not in spec.objectives] + spec.task_metrics
    wanted = [name for name in dict.fromkeys(wanted) if name not in ("accuracy", "latency_ms", "energy_mj", "size_kb", "params", "macs")]
    if not wanted and task.metrics is None:
        return
    if task.metrics is None:
        raise UsageError(f"objectives.{wanted[0]}: the task has no metrics() to measure it (Task.metrics)")
    sample = Subset(task.val, range(min(METRIC_SAMPLES, len(task.val))))
    try:
        values = task_metrics(task, model, loader(sample, METRIC_SAMPLES))
    except Exception as exc:  # noqa: BLE001
        raise UsageError(f"task.factory: Task.metrics raised on the untrained model: {spaces.first_line(exc)}") from None
    for name in wanted:
        if name not in values:
            raise UsageError(f"objectives.{name}: the task's metrics() returned no {name!r} (it returned: {', '.join(values) or 'nothing'})")


def _drop(spec: StudySpec, failed: list[spaces.Check]) -> tuple[StudySpec, list[tuple[str, str]]]:
    """The spec without the choices that failed (each check names its list's spec key),
    and the (key, fallback) pairs used where a list would be left empty."""
    data = to_toml_dict(spec)
    fallbacks = []
    for check in failed:
        path = check.key.split(".")
        table = data
        for part in path[:-1]:
            table = table[part]
        options = [o for o in table[path[-1]] if o != check.choice]
        if not options and check.fallback:
            options = [check.fallback]
            fallbacks.append((check.key, check.fallback))
        if not options:
            raise UsageError(f"{check.key}: no choice works on this model after dropping {check.choice!r} ({check.detail})")
        table[path[-1]] = options
    spec = from_dict(data, source="spec after preflight", extra_sections=tuple(spec.space.model_extra or ()))
    return spec, fallbacks


def run(spec: StudySpec, task: Task, plugins: Plugins | None = None, *, drop_unsupported: bool = False) -> PreflightReport:
    """Dry-run every enabled choice. A choice that cannot work makes the report
    `refused` (its `check()` raises the one-line UsageError), unless `drop_unsupported`:
    then the report's spec lacks it. User code that breaks its contract raises here."""
    started = time.perf_counter()
    plugins = plugins or Plugins()
    if task.kind == "table":  # nothing to build: the table answers every trial
        return PreflightReport(spec, task.kind)
    report = PreflightReport(spec, task.kind)
    active = spaces.active(dimensions(plugins), suggest_context(spec, task.kind, plugins))
    try:
        variants = _variants(spec, task, plugins)
    except ValueError as exc:
        raise UsageError(f"spec: {exc}") from None
    results: dict[tuple[str, str], spaces.Check] = {}  # a failure on any model counts, once
    for params in variants:
        torch.manual_seed(spec.seed)
        ctx = trial_context(params, task, spec, spec.seed, plugins)
        ctx.device = torch.device("cpu")  # a dry run: the driver may have no GPU
        model = _build(params, ctx, active, spec, task)
        report.models.append(spaces.describe(params, spec, active, suggest_context(spec, task.kind, plugins)).split("/")[0])
        if len(report.models) == 1:
            _check_task_metrics(spec, task, model)
        for dimension in active:
            for check in dimension.preflight(model, spaces.section(spec, dimension), ctx):
                key = (check.dimension, check.choice)
                if key not in results or (results[key].ok and not check.ok):
                    results[key] = check
    report.checks = list(results.values())
    report.seconds = time.perf_counter() - started
    failed = report.failed
    if failed and drop_unsupported:
        report.spec, report.fallbacks = _drop(spec, failed)
        report.dropped = failed
    report.refused = bool(failed) and not drop_unsupported
    return report


def check_weights(spec, task, plugins) -> None:
    """Before Ray starts: the weights fit the model built with the baseline's params,
    or UsageError in one line naming the first mismatched keys or shapes."""
    params = baseline.params(spec, task.kind, plugins)
    ctx = trial_context(params, task, spec, spec.seed, plugins)
    active = spaces.active(dimensions(plugins), suggest_context(spec, task.kind, plugins))
    builder = next(d for d in active if d.stage == "build")
    model = builder.apply(None, params, ctx)
    why = weights.mismatch(model, plugins.weights)
    if why is not None:
        raise UsageError(f"{weights.KEY}: {spec.weights} does not fit the model built with the baseline params {weights.params_words(params)}: {why}")

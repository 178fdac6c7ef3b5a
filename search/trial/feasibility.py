"""Hard constraints checked before training, on the trial's final form.

Latency, energy, size, parameters and MACs of a trial's deployable model depend on
its shape and on what the compress and deploy stages make of it, not on trained
weights. So before training, a trial builds its model untrained, runs the compress
stage without any fine-tune (each dimension first rewrites its params into what can
be measured untrained, `Dimension.untrained_params`: a choice that acts during
training or a fine-tune is measured as the one-shot choice of the same final form),
runs the deploy stage and measures it with the trial's own measurement path (`search.trial.measurement.measure`, through
`search.trial.placement`, so `measure_on` nodes measure it too), accuracy skipped.

A trial whose measured value misses a hard constraint by more than the noise margin
is stopped there and stored PRUNED, `prune_reason` "infeasible before training:
latency_ms 0.41 > 0.15 (...)", at the cost of that one measurement. The margin:

- timed metrics (latency, energy: the estimate is dominated by static power ×
  latency) are judged infeasible only beyond `budget.infeasible_margin` × the bound
  (default 1.0: more than twice the bound for `<=`). On the shared 2-core VM this was
  built on, the medians of one measurement jump between two speeds about 2× apart
  (docs/benchmarks.md, stability); a margin below that would prune feasible trials.
- counted metrics do not depend on timing: params and macs get 2%, size_kb 5% (an
  ONNX Runtime artifact of an untrained model came out up to 3% smaller than the
  trained one's, its graph optimizations folding untrained batch norms differently).
  Non-zero parameters and sparsity depend on which trained weights end up zero; they
  are not judged before training.

Constraints on accuracy or a task's own metrics cannot be judged before training; they
are judged on the finished trial, as before. The same measurement gives MO-ASHA
(`search.driver.moasha`) the latency/energy part of each rung's objective vector.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

import spaces
from search.core.records import PRETRAIN_ATTR, PRETRAIN_PREFIX
from search.core.spec import Constraint, StudySpec
from search.tasks.plugins import dimensions, resolve
from search.trial import placement
from search.trial.pipeline import build_model, compress, deploy, trial_context

TIMED = ("latency_ms", "latency_p90_ms", "energy_mj")
COUNTED_MARGINS = {"size_kb": 0.05, "params": 0.02, "macs": 0.02}
STATIC = TIMED + tuple(COUNTED_MARGINS)
# A trial's result carries its pre-training measurement under these keys
# (pretrain_latency_ms, ...); the searcher stores them as one user attr.
PREFIX, ATTR = PRETRAIN_PREFIX, PRETRAIN_ATTR
REASON_START = "infeasible before training"


def static_constraints(spec: StudySpec) -> list[Constraint]:
    """The spec's constraints that can be judged before training."""
    return [c for c in spec.constraints if c.objective in STATIC]


def static_objectives(spec: StudySpec) -> list[str]:
    return [name for name in spec.objective_names if name in STATIC]


def needed(spec: StudySpec, task_kind: str) -> bool:
    """Whether trials measure their untrained final form: for a constraint it can
    judge, or for the rung vectors of early stopping."""
    if task_kind == "table":
        return False
    return bool(static_constraints(spec)) or (spec.stopping != "none" and bool(static_objectives(spec)))


def untrained_params(params: dict, dimensions=()) -> dict:
    """The params of the measured stand-in: each dimension's own rewrite
    (`Dimension.untrained_params`; the built-ins where no dimensions are given)."""
    return spaces.untrained_params(params, dimensions)


def margin_for(metric: str, margin: float) -> float:
    return margin if metric in TIMED else COUNTED_MARGINS[metric]


def beyond_margin(constraint: Constraint, value: float, margin: float) -> bool:
    """Whether `value` misses `constraint` by more than the margin (a fraction of the
    bound: `<=` fails above bound × (1 + m), `>=` below bound / (1 + m))."""
    m = margin_for(constraint.objective, margin)
    if not math.isfinite(value):
        return False  # an unmeasured value decides nothing before training
    if constraint.op == "<=":
        return value > constraint.bound + m * abs(constraint.bound)
    return value * (1 + m) < constraint.bound if constraint.bound > 0 else value < constraint.bound - m * abs(constraint.bound)


def _fmt(value: float) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def infeasible_reason(constraints: list[Constraint], values: dict, margin: float) -> str | None:
    """`infeasible before training: latency_ms 0.41 > 0.15 (beyond the ×2 timing margin)`
    for the constraints missed beyond their margin, or None."""
    missed = []
    for constraint in constraints:
        value = values.get(constraint.objective)
        if value is None or not beyond_margin(constraint, float(value), margin):
            continue
        m = margin_for(constraint.objective, margin)
        why = f"beyond the ×{1 + m:g} timing margin" if constraint.objective in TIMED else f"beyond the {m:.0%} margin"
        wrong = ">" if constraint.op == "<=" else "<"
        missed.append(f"{constraint.objective} {_fmt(float(value))} {wrong} {constraint.bound:g} ({why})")
    return f"{REASON_START}: " + "; ".join(missed) if missed else None


@dataclass
class Verdict:
    values: dict  # the static metrics of the untrained final form, by name (+ how measured)
    reason: str | None  # why the trial is infeasible, or None
    seconds: float

    def result(self) -> dict:
        """What the trial reports: the values under PREFIX keys."""
        return {PREFIX + k: v for k, v in self.values.items()} | {PREFIX + "seconds": self.seconds}


MEASURED_KEYS = STATIC + ("nonzero_params", "latency_source", "energy_source")


def measured_keys(dimensions=()) -> tuple[str, ...]:
    """What the pre-training measurement keeps: MEASURED_KEYS and the facts the
    dimensions mark `untrained`."""
    return MEASURED_KEYS + tuple(name for name, fact in spaces.facts(dimensions).items() if fact.untrained)


def measure_untrained(params: dict, task, spec: StudySpec, seed: int, *, plugins=None, shared: dict | None = None) -> dict:
    """The static metrics of the trial's final form, built untrained (see the module
    docstring), by name."""

    if plugins is None:
        plugins = resolve(spec)
    active = spaces.active(
        dimensions(plugins), spaces.SuggestContext(task.kind, user_model=spec.model_factory is not None or plugins.model is not None)
    )
    params = untrained_params(params, dimensions(plugins))
    torch.manual_seed(seed)
    ctx = trial_context(params, task, spec, seed, plugins, shared)
    # No training anywhere: the compress stage's fine-tunes are skipped, the shapes are what count.
    ctx.fit = lambda model, *args, **kwargs: model
    model = build_model(params, ctx, active).to(ctx.device)
    model = compress(model, params, ctx, active)
    runner = deploy(model, params, ctx, active)
    metrics = placement.measure(model, runner, task, spec, ctx.info, "val", score=False)
    record = metrics.update(**spaces.record(model, runner, params, ctx, active)).to_result()
    return {k: record[k] for k in measured_keys(dimensions(plugins)) if record.get(k) is not None}


def check(params: dict, task, spec: StudySpec, seed: int, *, plugins=None, shared: dict | None = None) -> Verdict:
    """Measure the untrained final form and judge the spec's static constraints on it."""
    started = time.perf_counter()
    values = measure_untrained(params, task, spec, seed, plugins=plugins, shared=shared)
    reason = infeasible_reason(static_constraints(spec), values, spec.budget.infeasible_margin)
    return Verdict(values, reason, time.perf_counter() - started)


def from_result(result: dict | None) -> dict:
    """The pre-training values a trial reported, by name (empty if it measured none)."""
    if not result:
        return {}
    return {k[len(PREFIX):]: v for k, v in result.items() if isinstance(k, str) and k.startswith(PREFIX)}


def violations(spec: StudySpec, values: dict) -> list[float]:
    """Constraint violations (Optuna's convention, > 0 infeasible) from the pre-training
    values: what a PRUNED trial tells the sampler. Constraints that cannot be judged
    before training (accuracy, task metrics) count as met: nothing is known of them."""
    out = []
    for constraint in spec.constraints:
        value = values.get(constraint.objective)
        out.append(constraint.violation({constraint.objective: value}) if isinstance(value, (int, float)) and math.isfinite(value) else 0.0)
    return out


def closest(trials, constraints: list[Constraint]) -> list[tuple[Constraint, float, int]]:
    """For each constraint, the value nearest to meeting it among the trials' pre-training
    measurements, and its trial number (what `paretune launch` says when every trial
    was infeasible)."""
    out = []
    for constraint in constraints:
        measured = [
            (float(t.user_attrs[ATTR][constraint.objective]), t.number)
            for t in trials
            if isinstance(t.user_attrs.get(ATTR), dict) and isinstance(t.user_attrs[ATTR].get(constraint.objective), (int, float))
        ]
        if measured:
            value, number = (min if constraint.op == "<=" else max)(measured)
            out.append((constraint, value, number))
    return out

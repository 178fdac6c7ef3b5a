"""Known configs as the first trials of a search (a warm start, Optuna `enqueue_trial`).

Two sources, both files written by `paretune export` (only their `[params]` table is
read):

- the spec being launched, when it has `[params]`: enqueued when its study is created
  (`only_if_new`), so a second `launch` of the same file resumes instead of re-running it;
- `paretune launch SPEC --enqueue FILE...`: enqueued on every launch that names them.

Each seed is checked before Ray starts, by one dry draw of this spec's space
(the dimension registry) on an in-memory study whose sampler serves the file's values: a
value outside the distribution this spec gives that param (a choice it does not list,
a number out of range) is an error naming the file and the param; a dimension the file
does not pin is sampled as usual, and a param this spec does not search is left out;
both are reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from search.core.errors import UsageError
from search.core.records import ENQUEUED_ATTR
from search.core.spec import StudySpec, read_toml
from search.tasks.plugins import suggest_params


@dataclass(frozen=True)
class Seed:
    params: dict
    source: str  # the file, and the trial it was exported from when it says so
    origin_study: str | None = None
    origin_trial: int | None = None
    only_if_new: bool = False


@dataclass
class Checked:
    seed: Seed
    params: dict  # the params this spec searches, as the file pins them
    sampled: list[str] = field(default_factory=list)  # dimensions of this spec the file does not pin
    ignored: list[str] = field(default_factory=list)  # params of the file this spec does not search


def read(path: str | Path, *, only_if_new: bool = False, required: bool = False) -> Seed | None:
    """The `[params]` of a config file as a seed; None when it has none (unless `required`)."""
    data = read_toml(path)
    params = data.get("params")
    if params is None:
        if required:
            raise UsageError(f"--enqueue {path}: no [params] table (write one with `paretune export`)")
        return None
    if not isinstance(params, dict) or not params:
        raise UsageError(f"{path}: [params] must be a non-empty table of param = value")
    exported = data.get("exported") if isinstance(data.get("exported"), dict) else {}
    study, trial = exported.get("study"), exported.get("trial")
    origin = f" (trial {trial} of study {study!r})" if isinstance(trial, int) else ""
    return Seed(dict(params), f"{path}{origin}", study, trial if isinstance(trial, int) else None, only_if_new)


def warm_study_name(name: str, seed: Seed) -> str:
    """The study an exported spec searches by default: its own name would resume the
    study it was exported from."""
    return f"{name}-warm-t{seed.origin_trial}" if seed.origin_trial is not None else f"{name}-warm"


def _within(distribution: BaseDistribution, value: Any) -> bool:
    if isinstance(distribution, CategoricalDistribution):
        # `1 == True` in Python: a choice matches only a value of its own kind.
        return any(c == value and isinstance(c, bool) == isinstance(value, bool) for c in distribution.choices)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    if isinstance(distribution, IntDistribution):
        return isinstance(value, int) and distribution.low <= value <= distribution.high and (
            (value - distribution.low) % distribution.step == 0
        )
    if isinstance(distribution, FloatDistribution):
        if not distribution.low <= value <= distribution.high:
            return False
        step = distribution.step
        return step is None or math.isclose(round((value - distribution.low) / step) * step, value - distribution.low,
                                             abs_tol=1e-9 * max(1.0, abs(step)))
    return False


def _allowed(distribution: BaseDistribution) -> str:
    if isinstance(distribution, CategoricalDistribution):
        return "choices: " + ", ".join(repr(c) for c in distribution.choices)
    step = getattr(distribution, "step", None)
    return f"range [{distribution.low}, {distribution.high}]" + (f", step {step}" if step not in (None, 1) else "")


class _ServeParams(optuna.samplers.BaseSampler):
    """Serves the seed's values where they fit, records where they do not or are missing."""

    def __init__(self, params: dict):
        self.params = params
        self.bad: list[tuple[str, Any, BaseDistribution]] = []
        self.sampled: list[str] = []
        self.fallback = optuna.samplers.RandomSampler(seed=0)

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        if param_name in self.params:
            value = self.params[param_name]
            if _within(param_distribution, value):
                return value
            self.bad.append((param_name, value, param_distribution))
        else:
            self.sampled.append(param_name)
        return self.fallback.sample_independent(study, trial, param_name, param_distribution)


def check(seed: Seed, spec: StudySpec, task_kind: str, plugins=None) -> Checked:
    """Dry-draw this spec's space with the seed's values (see the module docstring)."""
    sampler = _ServeParams(seed.params)
    study = optuna.create_study(directions=spec.directions, sampler=sampler)
    trial = study.ask()
    try:
        suggest_params(trial, spec, task_kind, plugins)
    except (ValueError, KeyError) as exc:
        raise UsageError(f"{seed.source}: [params] do not fit this spec: {str(exc).splitlines()[0]}") from None
    if sampler.bad:
        name, value, distribution = sampler.bad[0]
        raise UsageError(
            f"{seed.source}: [params] {name} = {value!r} is outside this spec's space ({_allowed(distribution)})"
        )
    drawn = set(trial.params)
    return Checked(
        seed,
        {k: v for k, v in seed.params.items() if k in drawn},
        sampled=sorted(set(sampler.sampled)),
        ignored=sorted(set(seed.params) - drawn),
    )


def check_all(seeds: list[Seed], spec: StudySpec, task_kind: str, plugins=None) -> list[Checked]:
    return [check(seed, spec, task_kind, plugins) for seed in seeds]


def enqueue(study: optuna.Study, checked: list[Checked], study_is_new: bool) -> list[Checked]:
    """Enqueue the seeds (the spec's own only into a new study); returns those enqueued.
    The searcher's next `study.ask()` takes them first, in this order."""
    done = []
    for item in checked:
        if item.seed.only_if_new and not study_is_new:
            continue
        study.enqueue_trial(item.params, user_attrs={ENQUEUED_ATTR: item.seed.source})
        done.append(item)
    return done

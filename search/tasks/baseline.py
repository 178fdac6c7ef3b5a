"""The study's baseline: the user's model as they run it today, and every trade
stated against it.

The baseline is trial params like any other (so the sampler learns from it), drawn
by `spaces.BaselineTrial`: `[baseline] params` where given, the middle of each range
and the first of each list of choices otherwise, and only from the dimensions
`in_baseline` (no pruning, no quantization, no teacher, no augmentation, fp32 on the
eager runtime). `enqueue` queues it once per study, first, marked with the
`baseline` user attr; a stop that cuts it short queues it again (search.driver.tell).
With `[model] weights` it is the loaded model measured as is.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

import spaces
from search.core import outages
from search.core.errors import UsageError
from search.core.records import BASELINE_ATTR
from search.core.spec import StudySpec
from search.tasks.plugins import Plugins, dimensions, suggest_context

ATTR = BASELINE_ATTR
MAX_DROP = 0.01  # the accuracy a pick may give up against the baseline (INC's and NNCF's default criterion)


def optuna_params(spec: StudySpec, task_kind: str, plugins: Plugins | None = None, *, stage: str | None = None) -> dict:
    """The baseline's params by their Optuna names (what the study stores); only the
    build dimensions' with `stage="build"`."""
    trial = spaces.BaselineTrial(spec.baseline.params)
    owners: dict = {}
    try:
        spaces.suggest(trial, spec, dimensions(plugins), suggest_context(spec, task_kind, plugins), baseline=True, owners=owners)
    except ValueError as exc:  # a given value outside its range or choices
        raise UsageError(str(exc)) from None
    unknown = sorted(set(spec.baseline.params) - set(trial.params))
    if unknown:
        raise UsageError(f"baseline.params.{unknown[0]}: not a param of this space (its params: {', '.join(trial.params)})")
    return {k: v for k, v in trial.params.items() if stage is None or owners[k].stage == stage}


def params(spec: StudySpec, task_kind: str, plugins: Plugins | None = None) -> dict:
    """The baseline's params as a trial pipeline runs them (aliases resolved)."""
    fixed = optuna_params(spec, task_kind, plugins)
    return spaces.suggest(
        optuna.trial.FixedTrial(fixed), spec, dimensions(plugins), suggest_context(spec, task_kind, plugins), baseline=True
    )


def wanted(spec: StudySpec, task_kind: str) -> bool:
    return spec.baseline.enabled and task_kind != "table"


def enqueue(study: optuna.Study, spec: StudySpec, task_kind: str, plugins: Plugins | None = None) -> bool:
    """Queue the baseline unless the study has one (in any state); True if queued now."""
    if not wanted(spec, task_kind):
        return False
    if any(t.user_attrs.get(ATTR) for t in study.get_trials(deepcopy=False)):
        return False
    fixed = optuna_params(spec, task_kind, plugins)
    outages.retrying(lambda: study.enqueue_trial(fixed, user_attrs={ATTR: True}))
    return True


def is_baseline(trial) -> bool:
    return bool(trial.user_attrs.get(ATTR))


def find(trials: list[FrozenTrial]) -> FrozenTrial | None:
    """The study's measured baseline: its COMPLETE baseline trial (the last, if re-run)."""
    done = [t for t in trials if is_baseline(t) and t.state == TrialState.COMPLETE]
    return done[-1] if done else None


def check_max_drop(max_drop: float) -> float:
    if not (isinstance(max_drop, (int, float)) and 0 <= max_drop <= 1):
        raise UsageError(f"--max-drop {max_drop!r}: must be between 0 and 1 (0.01 = 1 percentage point)")
    return float(max_drop)

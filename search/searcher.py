"""Ray Tune searcher over Optuna's ask/tell: the thin adapter between the two.

Why not `ray.tune.search.optuna.OptunaSearch`: resuming it after a driver crash fails
on an RDB storage (ray-project/ray#19274), a NaN objective leaves its Optuna trial
RUNNING forever, and it cannot stop at "N COMPLETE trials". Here the Optuna storage
is the truth: the budget counts COMPLETE trials in it, every finished Tune trial is
told exactly once (COMPLETE with finite values, FAIL with a reason otherwise), and
trials still live when the search stops are marked FAIL.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from search.metrics import stored_attrs
from search.plugins import Plugins, suggest_params
from search.samplers import CONSTRAINTS_ATTR
from search.spec import StudySpec

FAIL_REASON_ATTR = "fail_reason"
INTERRUPTED = "interrupted: the search stopped before this trial finished"


def objective_values(result: dict | None, names: list[str]) -> tuple[list[float] | None, str | None]:
    """The objective values of a result, or None and why they are unusable."""
    if not result:
        return None, "no result reported"
    if result.get("fail_reason"):
        return None, str(result["fail_reason"])
    values = []
    for name in names:
        value = result.get(name)
        if value is None:
            return None, f"objective {name} missing from the result"
        try:
            value = float(value)
        except (TypeError, ValueError):
            return None, f"objective {name} is not a number: {value!r}"
        if not math.isfinite(value):
            return None, f"objective {name} is not finite: {value}"
        values.append(value)
    return values, None


def fail(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    trial.set_user_attr(FAIL_REASON_ATTR, reason[:1000])
    study.tell(trial, state=TrialState.FAIL)


def reconcile_running(study: optuna.Study, reason: str = INTERRUPTED) -> int:
    """Mark trials a dead driver left RUNNING (or WAITING) as FAIL; returns how many."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
    for frozen in stale:
        trial = optuna.trial.Trial(study, frozen._trial_id)
        if frozen.state == TrialState.WAITING:
            study._storage.set_trial_state_values(frozen._trial_id, TrialState.RUNNING)
        fail(study, trial, reason)
    return len(stale)


class AskTellSearcher(Searcher):
    def __init__(
        self,
        study: optuna.Study,
        spec: StudySpec,
        task_kind: str,
        *,
        budget: int,
        max_failed: int,
        on_told: Callable[[optuna.trial.FrozenTrial], None] | None = None,
        plugins: Plugins | None = None,
    ):
        super().__init__(metric=None, mode=None)
        self.study, self.spec, self.task_kind, self.plugins = study, spec, task_kind, plugins
        self.budget, self.max_failed, self.on_told = budget, max_failed, on_told
        self.complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        self.failed = 0  # failures in this run only; earlier ones do not block a resume
        self.live: dict[str, optuna.Trial] = {}

    def __getstate__(self) -> dict:
        # Tune pickles its search algorithm into its experiment directory for its own
        # restore; resume here goes through the Optuna storage, so keep only plain state.
        return {k: v for k, v in self.__dict__.items() if k not in ("study", "live", "on_told", "plugins")}

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the Optuna storage already holds every trial, and resume
        reads it from there (Tune's restore is not used)."""

    def restore(self, checkpoint_path: str) -> None:
        """See `save`."""

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # objectives come from the study spec, not from Tune

    @property
    def exhausted(self) -> bool:
        return self.complete >= self.budget or self.failed >= self.max_failed

    def suggest(self, trial_id: str):
        if self.exhausted:
            return Searcher.FINISHED if not self.live else None
        if self.complete + len(self.live) >= self.budget:
            return None  # enough in flight; a failure among them frees a slot
        trial = self.study.ask()
        params = suggest_params(trial, self.spec, self.task_kind, self.plugins)
        seed = self.spec.seed + trial.number
        trial.set_user_attr("seed", seed)
        self.live[trial_id] = trial
        return {"params": params, "seed": seed, "number": trial.number}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        trial = self.live.pop(trial_id, None)
        if trial is None:
            return
        values, reason = objective_values(None if error else result, self.spec.objective_names)
        if error:
            reason = "the trial's worker failed (after retries)"
        for key, value in stored_attrs(None if error else result).items():
            trial.set_user_attr(key, value)
        if values is None:
            fail(self.study, trial, reason or "unknown failure")
            self.failed += 1
        else:
            if self.spec.constraints:
                trial.set_user_attr(CONSTRAINTS_ATTR, [c.violation(result) for c in self.spec.constraints])
            self.study.tell(trial, values)
            self.complete += 1
        if self.on_told is not None:
            self.on_told(self.study._storage.get_trial(trial._trial_id))

    def close(self, reason: str = INTERRUPTED) -> int:
        """Fail every trial still live (Ctrl-C, driver shutdown); returns how many."""
        count = 0
        for trial_id in list(self.live):
            fail(self.study, self.live.pop(trial_id), reason)
            count += 1
        return count

"""Multi-objective asynchronous successive halving (MO-ASHA): dominated trials stop at rungs.

Rungs sit at `grace_epochs` × `reduction_factor`^k epochs (rounded, below
`budget.epochs`): 1, 3, 9, 27 for grace 1, factor 3 and 30 epochs. At a rung a trial's
objective vector is

- accuracy: its validation accuracy after that epoch;
- latency_ms, energy_mj, size_kb, params, macs: those of its final form, measured
  before training (search.trial.feasibility); a task's own metrics are only known at the end
  and are left out.

The promotion rule (`decide`): with n trials recorded at the rung, this one included,
the rung keeps its top k = ⌈n / reduction_factor⌉. Trials are ordered by non-dominated
sorting (front 0 first), then within a front by crowding distance (NSGA-II's, larger
first: a front's extremes and its sparse stretches go first). A trial continues iff
fewer than k trials are strictly ahead of it; trials tied with it (same front, same
crowding distance, e.g. equal vectors) are not ahead, so a tie at the cut is promoted.
With nothing recorded yet a trial continues (n = 1, k = 1), as in Ray's ASHA. A vector
with a non-finite value ranks nowhere: the trial is stopped as FAIL and not recorded.

Why a Tune scheduler: only a scheduler can stop a Tune trial (a searcher only hears of
results), and every Ray Tune scheduler compares one metric, so this is a
`FIFOScheduler` with its own `on_trial_result`. It runs in the driver (local,
`--address` and Ray Jobs alike) and keeps no rung table of its own: at each decision
it reads the `rung_<epoch>` user attrs of the study's COMPLETE, PRUNED and RUNNING
trials from the Optuna storage (every driver's, every earlier run's) and writes its own
record there before the trial goes on; a driver resumed after a kill -9 reads the same
tables. FAIL trials are left out (an interrupted trial runs again, under a new number,
and records again).

`early_stopping = "auto"` runs this scheduler `guarded` (search.driver.rung_trust): a trial of
the full-fidelity bracket is never stopped, and a rung the study has not yet shown to
rank as the end does promotes everyone; its record says which (`exempt`) and the τ it
was judged on (`tau`, `n`, `trusted`). It also records each trial's validation accuracy
after its last epoch (`trained_accuracy`), the end that trust is measured against.

A stopped trial reaches the searcher's `on_trial_complete` with its last, low-fidelity
result; the scheduler has told the searcher first (`AskTellSearcher.stop_as`), which
stores it PRUNED (or FAIL), never COMPLETE.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import optuna
from optuna.trial import TrialState
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from search.core import optuna_internals, outages
from search.core.dominance import crowding, nondominated_ranks
from search.core.records import BASELINE_ATTR, EPOCH_ATTR
from search.driver import rung_trust
from search.driver.rung_trust import rung_key
from search.trial import feasibility
from search.trial.runner import milestones

log = logging.getLogger(__name__)
RANKED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


# --- the promotion rule (pure) --------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    promote: bool
    ahead: int  # trials at the rung strictly ahead of this one
    keep: int  # how many the rung keeps: ceil(n / reduction_factor)
    of: int  # trials at the rung, this one included
    failed: bool = False  # the vector had a non-finite value: the trial FAILs


def decide(vector, others, reduction_factor: float) -> Decision:
    """Whether a trial with minimization `vector` continues past a rung where `others`
    (minimization vectors of the other trials recorded there) are; see the module
    docstring. Rows of `others` with a non-finite value are ignored."""
    mine = np.asarray(vector, dtype=float).reshape(-1)
    if not np.all(np.isfinite(mine)):
        return Decision(False, 0, 0, 0, failed=True)
    rows = [np.asarray(o, dtype=float).reshape(-1) for o in others]
    rows = [r for r in rows if r.shape == mine.shape and np.all(np.isfinite(r))]
    points = np.vstack([*rows, mine])
    n = len(points)
    keep = max(1, math.ceil(n / reduction_factor - 1e-9))
    ranks = nondominated_ranks(points)
    me = n - 1
    same_front = ranks == ranks[me]
    distance = np.full(n, -np.inf)
    distance[same_front] = crowding(points[same_front])
    ahead = int(np.sum(ranks < ranks[me]) + np.sum(same_front & (distance > distance[me])))
    return Decision(ahead < keep, ahead, keep, n)


# --- rung vectors and tables ----------------------------------------------------------


def rung_objectives(objectives: dict[str, str]) -> dict[str, str]:
    """The objectives known at a rung (name -> direction): accuracy and the static ones."""
    return {n: d for n, d in objectives.items() if n == "accuracy" or n in feasibility.STATIC}


def rung_values(result: dict, objectives: dict[str, str]) -> dict[str, float]:
    """A trial's vector at a rung, by objective name (NaN where a value is missing)."""

    def number(value) -> float:
        try:
            return float(value)
        except (TypeError, ValueError):
            return math.nan

    return {
        name: number(result.get("val_accuracy") if name == "accuracy" else result.get(feasibility.PREFIX + name))
        for name in objectives
    }


def minimized(values: dict[str, float], objectives: dict[str, str]) -> list[float]:
    return [values.get(n, math.nan) * (-1.0 if d == "maximize" else 1.0) for n, d in objectives.items()]


def ranked_trials(study: optuna.Study) -> list:
    """The study's COMPLETE, PRUNED and RUNNING trials (every driver's, every run's), from the storage."""
    storage, study_id = optuna_internals.storage_of(study), optuna_internals.study_id(study)
    return outages.retrying(lambda: storage.get_all_trials(study_id, deepcopy=False, states=RANKED))


def recorded(trials: list, epoch: int, *, exclude: int) -> list[dict[str, float]]:
    """The vectors recorded at rung `epoch` by `trials`, trial `exclude` left out."""
    key = rung_key(epoch)
    out = []
    for trial in trials:
        record = trial.user_attrs.get(key)
        if trial.number != exclude and isinstance(record, dict) and isinstance(record.get("values"), dict):
            out.append(record["values"])
    return out


def describe(values: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.4g}" for name, value in values.items())


# --- the scheduler --------------------------------------------------------------------


class MOASHAScheduler(FIFOScheduler):
    """Ray Tune scheduler of MO-ASHA over an `AskTellSearcher` (which holds the study,
    the live Optuna trials and stores the outcome). `guarded` (early_stopping = "auto"):
    a rung judges only once trusted, and the full-fidelity bracket is never judged
    (search.driver.rung_trust)."""

    def __init__(self, searcher, spec, guarded: bool = False):
        super().__init__()
        budget = spec.budget
        self.searcher = searcher
        self.guarded = guarded
        self.rungs = milestones(budget.grace_epochs, budget.reduction_factor, budget.epochs)
        self.epochs = budget.epochs
        self.reduction_factor = budget.reduction_factor
        self.objectives = rung_objectives(dict(spec.objectives))
        self.accuracy_index = list(spec.objective_names).index("accuracy")
        self.decisions = {"promoted": 0, "stopped": 0, "failed": 0}  # this run's, for the summary

    def __getstate__(self) -> dict:
        # Tune pickles its scheduler with the experiment state; the searcher holds the
        # storage, which is where everything this scheduler knows is kept.
        return {k: v for k, v in self.__dict__.items() if k != "searcher"}

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        epoch = result.get("epoch")
        if not isinstance(epoch, (int, float)):
            return TrialScheduler.CONTINUE
        epoch = int(epoch)
        live = self.searcher.live.get(trial.trial_id)
        if self.guarded and epoch == self.epochs and live is not None and "val_accuracy" in result:
            self.searcher.remember(trial.trial_id, {rung_trust.TRAINED_ATTR: float(result["val_accuracy"])})
        if epoch not in self.rungs:
            return TrialScheduler.CONTINUE
        key = rung_key(epoch)
        if live is None or key in self.searcher.pending_attrs(trial.trial_id):
            return TrialScheduler.CONTINUE  # not a trial of this search, or judged at this rung already
        values = rung_values(result, self.objectives)
        try:
            trials = ranked_trials(self.searcher.study)
        except outages.StorageUnavailable as exc:
            log.warning("rung %d of trial %d: storage unreadable (%s); judged on no other trial", epoch, live.number, exc)
            trials = []
        others = recorded(trials, epoch, exclude=live.number)
        decision = decide(
            minimized(values, self.objectives), [minimized(o, self.objectives) for o in others], self.reduction_factor
        )
        if decision.failed:
            bad = ", ".join(f"{n} {v}" for n, v in values.items() if not math.isfinite(v))
            self.decisions["failed"] += 1
            self.searcher.stop_as(trial.trial_id, f"non-finite objective at rung epoch {epoch}: {bad}", pruned=False)
            return TrialScheduler.STOP
        record = {"epoch": epoch, "values": values, "ahead": decision.ahead, "keep": decision.keep, "of": decision.of}
        exempt = self._exempt(live, trials, epoch, record)
        record["promoted"] = decision.promote or exempt
        self.searcher.remember(trial.trial_id, {key: record}, write_now=True)
        if decision.promote or exempt:
            self.decisions["promoted"] += 1
            return TrialScheduler.CONTINUE
        self.decisions["stopped"] += 1
        self.searcher.remember(trial.trial_id, {EPOCH_ATTR: epoch})
        trusted = f"; rung trusted at τ = {record['tau']:.2f} over {record['n']} trials" if self.guarded else ""
        self.searcher.stop_as(
            trial.trial_id,
            f"dominated at rung epoch {epoch}: {decision.ahead} of {decision.of} trials ahead, the rung keeps "
            f"{decision.keep} ({describe(values)}){trusted}",
            pruned=True,
        )
        return TrialScheduler.STOP

    def _exempt(self, live, trials: list, epoch: int, record: dict) -> bool:
        """Whether this trial goes on whatever the rung says; notes why in `record`.
        The baseline is what every trade is stated against: it always trains to the end."""
        if live.user_attrs.get(BASELINE_ATTR):
            record["exempt"] = "baseline"
            return True
        if not self.guarded:
            return False
        if rung_trust.full_bracket(live.number):
            record["exempt"] = "full bracket"
            return True
        trust = rung_trust.trust(trials, epoch, self.accuracy_index)
        record.update(trust.record())
        if not trust.trusted:
            record["exempt"] = "rung not trusted"
            return True
        return False

    def debug_string(self) -> str:
        guard = ", trusted rungs only, a full bracket" if self.guarded else ""
        return f"MO-ASHA: rungs at epochs {self.rungs}, keeps 1/{self.reduction_factor:g}{guard}"

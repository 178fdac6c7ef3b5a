"""Getting a finished trial's outcome into the storage, whatever happens on the way.

- A storage call that fails for a passing reason is retried with backoff
  (search.core.outages).
- A trial that was finished elsewhere meanwhile (another driver found this driver's
  lease expired and marked it FAIL) keeps its result anyway: the values land in a new
  COMPLETE trial with the same params (user attr `recorded_for` = the first trial's
  number), and the re-run queued for the first trial is withdrawn.
- A storage that stays unreachable through every retry: the outcome is appended to
  `$PARETUNE_HOME/unsaved/<study>-<storage hash>.jsonl` (default ~/.paretune) and the
  next launch of that study on that storage adds it (`replay`).
- An interrupted trial's params are queued once more (`requeue_once`): the sampler's
  chosen point is run again rather than thrown away. A search that stops (Ctrl-C,
  SIGTERM) with no other driver to take them over leaves its cut-short trials FAIL and
  nothing WAITING; the next launch of the study queues them (`requeue_interrupted`).
- A stopped trial (infeasible before training, or stopped at a rung) is told PRUNED
  through `study.tell`, so the sampler sees it (TPE ranks it with the bad trials).
- Constraint violations (the `constraints` user attr, in the spec's order) are also set
  as Optuna's own constraint values (`set_constraint("0", v)`, ...) before the tell:
  what every Optuna 5 sampler reads feasibility from (`trial.constraints`), in place
  of the deprecated `constraints_func`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path

import optuna
from optuna.distributions import distribution_to_json, json_to_distribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from search.core import optuna_internals
from search.core import storage as storages
from search.core.outages import StorageUnavailable, retrying
from search.core.records import (
    BASELINE_ATTR,
    CONSTRAINTS_ATTR,
    FAIL_REASON_ATTR,
    INTERRUPTED_PREFIX,
    REASON_ATTR,
    RECORDED_FOR_ATTR,
    RETRY_OF_ATTR,
    SEED_ATTR,
)


def finished_elsewhere(exc: BaseException) -> bool:
    # Optuna raises UpdateFinishedTrialError from the storage, or ValueError("Cannot
    # tell a FAIL trial.") when its own copy already shows the trial finished.
    return isinstance(exc, UpdateFinishedTrialError) or (isinstance(exc, ValueError) and str(exc).startswith("Cannot tell"))


def fail(study: optuna.Study, trial_id: int, reason: str) -> bool:
    """Mark a live trial FAIL with `reason`; False if it was finished elsewhere first
    (exactly one of several drivers racing to fail it gets True)."""
    storage = optuna_internals.storage_of(study)
    try:
        retrying(lambda: storage.set_trial_user_attr(trial_id, FAIL_REASON_ATTR, reason[:1000]))
        return retrying(lambda: storage.set_trial_state_values(trial_id, TrialState.FAIL))
    except UpdateFinishedTrialError:
        return False


def requeue_once(study: optuna.Study, trial: FrozenTrial) -> bool:
    """Queue the interrupted `trial`'s params for another run, unless it was itself such
    a re-run (a point that is interrupted twice is dropped: it may be what kills drivers)."""
    if RETRY_OF_ATTR in trial.user_attrs or not trial.params:
        return False
    attrs = {RETRY_OF_ATTR: trial.number}
    if trial.user_attrs.get(BASELINE_ATTR):
        attrs[BASELINE_ATTR] = True
    retrying(lambda: study.enqueue_trial(dict(trial.params), user_attrs=attrs))
    return True


def requeue_interrupted(study: optuna.Study) -> int:
    """Queue the params of every trial a stopped search cut short (FAIL, reason
    "interrupted...", its params all chosen) that has no re-run yet; returns how many.
    Called as a launch starts. Two drivers resuming one study at the same instant may
    both queue a point: it then runs twice, nothing is lost."""
    trials = study.get_trials(deepcopy=False)
    rerun = {t.user_attrs.get(RETRY_OF_ATTR) for t in trials}
    count = 0
    for trial in trials:
        cut_short = trial.state == TrialState.FAIL and str(trial.user_attrs.get(FAIL_REASON_ATTR, "")).startswith(
            INTERRUPTED_PREFIX
        )
        if cut_short and SEED_ATTR in trial.user_attrs and trial.number not in rerun and requeue_once(study, trial):
            count += 1
    return count


def withdraw_retry(study: optuna.Study, number: int, replacement: int) -> None:
    """The result of trial `number` arrived after all: fail its queued re-run, if no
    driver has picked it up yet."""
    storage = optuna_internals.storage_of(study)
    for waiting in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if waiting.user_attrs.get(RETRY_OF_ATTR) != number:
            continue
        waiting_id = optuna_internals.trial_id(waiting)
        try:
            # The same claim Optuna's ask uses: only one process turns WAITING into RUNNING.
            if retrying(lambda: storage.set_trial_state_values(waiting_id, TrialState.RUNNING)):
                fail(study, waiting_id, f"withdrawn: trial {number}'s own result was recorded as trial {replacement}")
        except UpdateFinishedTrialError:
            pass


def constraint_values(attrs: dict) -> dict[str, float]:
    """Optuna's constraint values from the `constraints` user attr (violations, <= 0
    feasible), keyed "0", "1", ... in the spec's order. A NaN violation (a metric that
    was not measured) is left out: Optuna refuses NaN, and nothing is known of it."""
    return {
        str(index): float(value)
        for index, value in enumerate(attrs.get(CONSTRAINTS_ATTR) or [])
        if isinstance(value, (int, float)) and not math.isnan(value)
    }


def _copy(study: optuna.Study, number: int, params: dict, distributions: dict, values: list[float] | None,
          user_attrs: dict, pruned: bool = False) -> FrozenTrial:
    """A new finished trial holding the outcome meant for trial `number`."""
    state = TrialState.COMPLETE if values is not None else TrialState.PRUNED if pruned else TrialState.FAIL
    copy = optuna.trial.create_trial(
        state=state, params=params, distributions=distributions, values=values,
        user_attrs={**user_attrs, RECORDED_FOR_ATTR: number},
    )
    for key, value in constraint_values(user_attrs).items():
        copy.set_constraint(key, value)
    optuna_internals.validate(copy)
    # What Study.add_trial does, keeping the new trial's id.
    storage = optuna_internals.storage_of(study)
    trial_id = retrying(lambda: storage.create_new_trial(optuna_internals.study_id(study), template_trial=copy))
    added = storage.get_trial(trial_id)
    if values is not None:
        withdraw_retry(study, number, added.number)
    return added


def record(
    study: optuna.Study,
    trial: optuna.Trial,
    values: list[float] | None,
    attrs: dict,
    *,
    reason: str | None = None,
    pruned: bool = False,
    unsaved: Path | None = None,
) -> int | None:
    """Store a trial's outcome: COMPLETE with `values`, or FAIL with `reason` (values
    None), or with `pruned` PRUNED with `reason` as its prune reason; its `attrs` as
    user attrs. Returns the id of the stored trial holding it (a new one when the
    trial was finished elsewhere), or None when the storage stayed unreachable and the
    outcome went to the `unsaved` file instead."""
    storage = optuna_internals.storage_of(study)
    trial_id = optuna_internals.trial_id(trial)
    if reason is not None:
        attrs = {**attrs, (REASON_ATTR if pruned else FAIL_REASON_ATTR): reason[:1000]}
    try:
        retrying(lambda: storages.set_user_attrs(storage, trial_id, attrs))  # one commit, not one per key
        for key, value in constraint_values(attrs).items():
            retrying(lambda: trial.set_constraint(key, value))
        if pruned:
            retrying(lambda: study.tell(trial, state=TrialState.PRUNED))
        elif values is None:
            retrying(lambda: storage.set_trial_state_values(trial_id, TrialState.FAIL))
        else:
            retrying(lambda: study.tell(trial, values))
        return trial_id
    except StorageUnavailable as exc:
        if unsaved is None:
            raise
        _append_unsaved(unsaved, trial, values, attrs, str(exc), pruned)
        return None
    except Exception as exc:  # noqa: BLE001 - only "finished elsewhere" is handled
        if not finished_elsewhere(exc):
            raise
    stored = retrying(lambda: storage.get_trial(trial_id))
    if values is None:
        return trial_id  # it is finished (FAIL) already; nothing is lost by keeping that
    if stored.state == TrialState.COMPLETE and stored.values == list(values):
        return trial_id  # our own tell went through on a connection that then dropped
    return optuna_internals.trial_id(_copy(study, trial.number, trial.params, trial.distributions, values, attrs))


# --- outcomes the storage could not take ------------------------------------------


def unsaved_path(study_name: str, storage_url: str) -> Path:
    """Where outcomes for this study on this storage wait (the URL is hashed: a
    password in it is never written)."""
    home = Path(os.environ.get("PARETUNE_HOME") or Path.home() / ".paretune")
    digest = hashlib.sha256(storage_url.encode()).hexdigest()[:12]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in study_name)
    return home / "unsaved" / f"{safe}-{digest}.jsonl"


def _append_unsaved(
    path: Path, trial: optuna.Trial, values: list[float] | None, attrs: dict, error: str, pruned: bool = False
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {
        "number": trial.number,
        "params": trial.params,
        "distributions": {k: distribution_to_json(d) for k, d in trial.distributions.items()},
        "values": values,
        "pruned": pruned,
        "user_attrs": attrs,
        "error": error,
        "time": time.time(),
    }
    with open(path, "a") as handle:
        handle.write(json.dumps(entry, default=str) + "\n")


def replay(study: optuna.Study, path: Path) -> int:
    """Add the outcomes waiting in `path` to the study; returns how many were added."""
    taken = path.with_name(f"{path.name}.{os.getpid()}")
    try:
        os.replace(path, taken)  # atomic: two drivers starting at once never both add them
    except FileNotFoundError:
        return 0
    pending = [line for line in taken.read_text().splitlines() if line.strip()]
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    added = 0
    try:
        while pending:
            entry = json.loads(pending[0])
            original = by_number.get(entry["number"])
            stored = original is not None and (
                (entry["values"] is not None and original.values == entry["values"])
                or (entry.get("pruned") and original.state == TrialState.PRUNED)
            )
            if not stored:  # (stored: the last attempt went through after all)
                distributions = {k: json_to_distribution(d) for k, d in entry["distributions"].items()}
                _copy(study, entry["number"], entry["params"], distributions, entry["values"], entry["user_attrs"],
                      pruned=bool(entry.get("pruned")))
                added += 1
            pending.pop(0)
    finally:
        if pending:  # the storage failed again: keep what is left for the next launch
            with open(path, "a") as handle:
                handle.write("".join(line + "\n" for line in pending))
        taken.unlink()
    return added

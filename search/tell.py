"""Getting a finished trial's outcome into the storage, whatever happens on the way.

- A storage call that fails for a passing reason (SQLite's lock timeout, a dropped
  PostgreSQL connection, a journal file briefly unwritable) is retried with backoff.
- A trial that was finished elsewhere meanwhile (another driver found this driver's
  lease expired and marked it FAIL) keeps its result anyway: the values land in a new
  COMPLETE trial with the same params (user attr `recorded_for` = the first trial's
  number), and the re-run queued for the first trial is withdrawn.
- Each retry is one line for the user (`retry_line`): why, in a few words, when the next
  attempt comes, and how many finished results this driver holds that the storage does
  not have yet (a searcher counts its own: `holding`), none of them lost.
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
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import optuna
from optuna.distributions import distribution_to_json, json_to_distribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from search import storage as storages

FAIL_REASON_ATTR = "fail_reason"
CONSTRAINTS_ATTR = "constraints"  # violations, one per spec constraint (<= 0: met)
RETRY_OF_ATTR = "retry_of"  # on a queued trial: the number of the interrupted trial it re-runs
SEED_ATTR = "seed"  # set once a trial's params are all chosen (search.searcher)
BASELINE_ATTR = "baseline"  # on the study's baseline trial (search.baseline); kept by a re-run
INTERRUPTED_PREFIX = "interrupted"  # how the fail reason of a trial cut short begins
RECORDED_FOR_ATTR = "recorded_for"  # on a trial holding a late result: the trial it belongs to
# Seconds between attempts of a storage call that failed for a passing reason (about a
# minute in all, on top of SQLite's own 30 s lock wait per attempt).
RETRY_WAITS_S = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)

T = TypeVar("T")
log = logging.getLogger(__name__)


class StorageUnavailable(Exception):
    """A storage call still failed after every retry."""


def is_transient(exc: BaseException) -> bool:
    """Errors a retry may cure: locks, timeouts, lost connections, I/O."""
    import sqlalchemy.exc

    if isinstance(exc, (optuna.exceptions.StorageInternalError, sqlalchemy.exc.OperationalError, OSError)):
        return True
    return isinstance(exc, sqlalchemy.exc.DBAPIError) and bool(exc.connection_invalidated)


# Why a storage call failed, in a few words: (text in the error, what the user reads).
CAUSES = (
    ("connection refused", "connection refused"),
    ("database is locked", "database is locked"),
    ("server closed the connection", "server closed the connection"),
    ("terminating connection", "server closed the connection"),
    ("ssl connection has been closed", "server closed the connection"),
    ("the database system is starting up", "server starting up"),
    ("the database system is shutting down", "server shutting down"),
    ("could not translate host name", "host not found"),
    ("no route to host", "no route to host"),
    ("no space left on device", "disk full"),
    ("timeout", "timeout"),
    ("timed out", "timeout"),
)

# Counters of the finished results held by the searchers running in this process.
_holders: list[Callable[[], int]] = []
# The last retry line logged and when: calls failing together (a tell, a count, the
# lease's heartbeat; each on its own thread) say it once in this many seconds.
_last_said = ["", 0.0]
_said_lock = threading.Lock()
SAY_ONCE_S = 5.0


def _first_line(exc: BaseException) -> str:
    # StorageInternalError says only "An exception is raised during the commit";
    # the cause (e.g. "database is locked") is what helps.
    cause = exc.__cause__ or exc
    text = str(getattr(cause, "orig", None) or cause).strip()
    return f"{type(cause).__name__}: {text.splitlines()[0][:200] if text else ''}"


def cause(exc: BaseException) -> str:
    """Why a storage call failed, as the user would say it (`CAUSES`); else the first
    line of the error. The driver's own wrappers (Optuna's StorageInternalError,
    SQLAlchemy's OperationalError) are looked through to the database's message."""
    inner = exc.__cause__ or exc
    text = " ".join(str(e) for e in (exc, inner, getattr(inner, "orig", None)) if e is not None)
    found = next((phrase for needle, phrase in CAUSES if needle in text.lower()), None)
    return found or _first_line(exc)


@contextmanager
def holding(count: Callable[[], int]) -> Iterator[None]:
    """While the block runs, `count()` finished results (held by a searcher, not yet in
    the storage) are added to the count each retry line gives."""
    _holders.append(count)
    try:
        yield
    finally:
        _holders.remove(count)


def retry_line(exc: BaseException, retry: int, wait_s: float, held: int) -> str:
    """The line a user reads while a storage call is retried: the cause, when the next
    attempt comes, and that the results finished meanwhile wait safely (in memory, or
    in the unsaved file the next launch adds), so none is lost."""
    kept = f"{held} result{'s' if held != 1 else ''} held, none lost" if held else "no results held"
    return f"storage unreachable ({cause(exc)}): retry {retry} in {wait_s:g} s; {kept}"


def _say(line: str) -> None:
    """Log `line`, unless the same line was logged less than SAY_ONCE_S ago."""
    with _said_lock:
        now = time.monotonic()
        if line == _last_said[0] and now - _last_said[1] < SAY_ONCE_S:
            return
        _last_said[:] = [line, now]
    log.warning(line)


def retrying(call: Callable[[], T]) -> T:
    """`call()`, retried after RETRY_WAITS_S while it fails with a transient error;
    StorageUnavailable once they are used up."""
    for attempt, wait in enumerate((*RETRY_WAITS_S, None), start=1):
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - sorted by is_transient
            if not is_transient(exc):
                raise
            if wait is None:
                raise StorageUnavailable(f"{_first_line(exc)} (after {attempt} attempts)") from exc
            _say(retry_line(exc, attempt, wait, sum(count() for count in list(_holders))))
            time.sleep(wait)
    raise AssertionError("unreachable")


def finished_elsewhere(exc: BaseException) -> bool:
    # Optuna raises UpdateFinishedTrialError from the storage, or ValueError("Cannot
    # tell a FAIL trial.") when its own copy already shows the trial finished.
    return isinstance(exc, UpdateFinishedTrialError) or (isinstance(exc, ValueError) and str(exc).startswith("Cannot tell"))


def fail(study: optuna.Study, trial_id: int, reason: str) -> bool:
    """Mark a live trial FAIL with `reason`; False if it was finished elsewhere first
    (exactly one of several drivers racing to fail it gets True)."""
    storage = study._storage
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
    storage = study._storage
    for waiting in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if waiting.user_attrs.get(RETRY_OF_ATTR) != number:
            continue
        try:
            # The same claim Optuna's ask uses: only one process turns WAITING into RUNNING.
            if retrying(lambda: storage.set_trial_state_values(waiting._trial_id, TrialState.RUNNING)):
                fail(study, waiting._trial_id, f"withdrawn: trial {number}'s own result was recorded as trial {replacement}")
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
    copy._validate()
    # What Study.add_trial does, keeping the new trial's id.
    trial_id = retrying(lambda: study._storage.create_new_trial(study._study_id, template_trial=copy))
    added = study._storage.get_trial(trial_id)
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
    from search.pruned import REASON_ATTR

    storage = study._storage
    trial_id = trial._trial_id
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
    return _copy(study, trial.number, trial.params, trial.distributions, values, attrs)._trial_id


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

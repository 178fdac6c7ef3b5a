"""Ray Tune searcher over Optuna's ask/tell: the thin adapter between the two.

Why not `ray.tune.search.optuna.OptunaSearch`: resuming it after a driver crash fails
on an RDB storage (ray-project/ray#19274), a NaN objective leaves its Optuna trial
RUNNING forever, and it cannot stop at "N COMPLETE trials". Here the Optuna storage
is the truth: the budget counts COMPLETE trials in it (every driver's), every
finished Tune trial is told exactly once (COMPLETE with finite values, FAIL with a
reason otherwise; `search.driver.tell` makes sure it lands), and trials still live when the
search stops are marked FAIL with their params queued again. Another driver's RUNNING
trial is touched only once that driver's lease expired (`search.driver.lease`).

Stopped trials are PRUNED, never COMPLETE (`search.driver.pruned`): a trial whose untrained
final form missed a hard constraint reports `prune_reason` instead of metrics
(`search.trial.feasibility`); a trial MO-ASHA stops at a rung (`search.driver.moasha`) reaches
`on_trial_complete` with its last, low-fidelity result, and the scheduler has said so
first (`stop_as`). The budget counts COMPLETE trials only, so pruned ones free their
slot for the next config.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from search.core import optuna_internals, outages
from search.core import storage as storages
from search.core.records import SEED_ATTR
from search.core.spec import StudySpec
from search.driver import lease, pruned, tell
from search.tasks import baseline
from search.tasks.plugins import Plugins, suggest_params
from search.trial import feasibility, timing, variants
from search.trial.metrics import stored_attrs

INTERRUPTED = f"{tell.INTERRUPTED_PREFIX}: the search stopped before this trial finished"
EXPIRED = tell.INTERRUPTED_PREFIX + ": its driver ({driver}) stopped heartbeating; lease of {lease_s:g} s expired {late:.0f} s ago"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stop:
    """A scheduler's word that it stopped a trial: stored PRUNED (or FAIL) with `reason`."""

    reason: str
    pruned: bool


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


def reconcile_running(
    study: optuna.Study,
    *,
    own: str | None = None,
    now: float | None = None,
    on_reconciled: Callable[[optuna.trial.FrozenTrial, str], None] | None = None,
) -> int:
    """Mark FAIL the RUNNING trials whose driver is gone (its lease expired, or it ended
    without finishing them) and queue each one's params once more; trials of live
    drivers, and this driver's own (`own`), are left alone. Returns how many;
    `on_reconciled(trial, what happened)` hears of each."""
    now = time.time() if now is None else now
    drivers = lease.records(optuna_internals.storage_of(study), optuna_internals.study_id(study))
    count = 0
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if own is not None and frozen.system_attrs.get(lease.DRIVER_ATTR) == own:
            continue
        gone = lease.owner_gone(frozen, drivers, now)
        if gone is None:
            continue
        if isinstance(gone, lease.DriverRecord):
            if gone.ended is not None:
                reason = f"{INTERRUPTED} (its driver {gone.describe()} ended)"
            else:
                reason = EXPIRED.format(driver=gone.describe(), lease_s=gone.lease_s, late=gone.age(now) - gone.lease_s)
        else:
            reason = f"{INTERRUPTED} ({gone})"
        if tell.fail(study, optuna_internals.trial_id(frozen), reason):  # False: another driver got there first
            # Only a point whose params were all chosen (not cut off mid-suggest) runs again.
            requeued = SEED_ATTR in frozen.user_attrs and tell.requeue_once(study, frozen)
            count += 1
            if on_reconciled is not None:
                on_reconciled(frozen, reason + ("; its params are queued again" if requeued else ""))
    return count


def settle(
    study: optuna.Study,
    own: str,
    *,
    poll_s: float = 0.5,
    on_wait: Callable[[str], None] | None = None,
    on_reconciled: Callable[[optuna.trial.FrozenTrial, str], None] | None = None,
) -> int:
    """Before a driver leaves: if a driver holding RUNNING trials went quiet (missed
    heartbeats, lease not run out yet), wait for its lease to expire and reconcile its
    trials, so a study is never left with trials RUNNING that nobody runs. Drivers
    still heartbeating finish their own trials. Returns how many were reconciled."""
    reconciled, announced = 0, False
    while True:
        reconciled += reconcile_running(study, own=own, on_reconciled=on_reconciled)
        now = time.time()
        drivers = lease.records(optuna_internals.storage_of(study), optuna_internals.study_id(study))
        quiet = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                 if t.system_attrs.get(lease.DRIVER_ATTR) != own and lease.owner_silent(t, drivers, now)]
        if not quiet:
            return reconciled
        if on_wait is not None and not announced:
            owners = {t.system_attrs.get(lease.DRIVER_ATTR) for t in quiet}
            named = [drivers[o] for o in owners if o in drivers]
            on_wait(
                f"waiting for {len(quiet)} RUNNING trial(s) of "
                + (", ".join(f"{r.describe()} (no heartbeat for {r.age(now):.0f}s, lease {r.lease_s:g}s)" for r in named) or "a driver that has not claimed them yet")
                + " to be finished or reconciled"
            )
            announced = True
        time.sleep(poll_s)


class AskTellSearcher(Searcher):
    """Asks Optuna for each Tune trial and tells it the result.

    Budget: several drivers may share a study, so the counts come from the storage at
    each decision, not from this driver's own tally: a new trial is asked only while
    COMPLETE + RUNNING (every driver's) < budget, and the search ends once COMPLETE >=
    budget. With N drivers that ends at budget <= COMPLETE <= budget + total
    concurrency - 1 (trials already running when the budget fills still finish).
    It also ends after `max_failed` failures or `max_infeasible` trials infeasible
    before training in this run (a constraint no config of the space can meet).
    """

    # While other drivers' trials fill the budget, Tune keeps asking; read the storage
    # at most this often then.
    WAIT_POLL_S = 0.5

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
        driver: lease.DriverLease | None = None,
        unsaved: Path | None = None,
        max_infeasible: int | None = None,
        pipelined: bool = False,
    ):
        super().__init__(metric=None, mode=None)
        # Ask the next trial while the running ones train (`_ask_ahead`) and store each
        # outcome on a thread of its own (`_store`): Tune's event loop, which answers every
        # trial, then never waits on the sampler or the storage.
        self.pipelined = pipelined
        self.study, self.spec, self.task_kind, self.plugins = study, spec, task_kind, plugins
        self.budget, self.max_failed, self.on_told = budget, max_failed, on_told
        self.max_infeasible = max_infeasible if max_infeasible is not None else budget
        self.driver, self.unsaved = driver, unsaved
        self.failed = 0  # failures in this run only; earlier ones do not block a resume
        self.pruned = {pruned.BEFORE_TRAINING: 0, pruned.AT_RUNG: 0}  # trials this run stored PRUNED
        self.told = 0  # outcomes this driver stored
        self.unsaved_count = 0  # outcomes that went to the unsaved file
        # Outcomes handed to `_store` and those it is done with: each counter is written by
        # one thread only (Tune's loop, the writer), so `held` needs no lock.
        self._handed = self._settled = 0
        self.live: dict[str, optuna.Trial] = {}
        self.variants: dict[str, list[optuna.Trial]] = {}  # Tune trial id -> the variants sharing its training
        self._waiting_since: float | None = None
        self._stops: dict[str, Stop] = {}  # Tune trial id -> the scheduler's stop
        self._attrs: dict[str, dict] = {}  # Tune trial id -> user attrs to store with its outcome
        self._marks: dict[str, dict] = {}  # Tune trial id -> when its params were chosen and handed to Tune
        self._ahead: Future | None = None  # the trial being asked ahead
        self._pool: ThreadPoolExecutor | None = None  # asks ahead
        self._writer: ThreadPoolExecutor | None = None  # stores outcomes, in the order they came
        self._writes: list[Future] = []

    def __getstate__(self) -> dict:
        # Tune pickles its search algorithm into its experiment directory for its own
        # restore; resume here goes through the Optuna storage, so keep only plain state.
        return {k: v for k, v in self.__dict__.items()
                if k not in ("study", "live", "variants", "on_told", "driver", "plugins", "_attrs", "_marks", "_ahead", "_pool",
                              "_writer", "_writes")}

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the Optuna storage already holds every trial, and resume
        reads it from there (Tune's restore is not used)."""

    def restore(self, checkpoint_path: str) -> None:
        """See `save`."""

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # objectives come from the study spec, not from Tune

    def _counts(self) -> tuple[int, int]:
        """COMPLETE and RUNNING trials in the storage (every driver's), read at once: two
        reads could miss a trial that finished between them and overshoot the budget."""
        storage, study_id = optuna_internals.storage_of(self.study), optuna_internals.study_id(self.study)
        trials = outages.retrying(lambda: storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)))
        complete = sum(t.state == TrialState.COMPLETE for t in trials)
        return complete, len(trials) - complete

    @property
    def complete(self) -> int:
        """COMPLETE trials in the storage, from every driver."""
        return self._counts()[0]

    @property
    def infeasible_stop(self) -> bool:
        """This run stopped because `max_infeasible` trials were infeasible before training."""
        return self.pruned[pruned.BEFORE_TRAINING] >= self.max_infeasible

    @property
    def exhausted(self) -> bool:
        return self.failed >= self.max_failed or self.infeasible_stop or self.complete >= self.budget

    def suggest(self, trial_id: str):
        self._raise_failed_write()
        if self.failed >= self.max_failed or self.infeasible_stop:
            return Searcher.FINISHED if not self.live else None
        point = self._take_ahead()  # asked while the last trials ran; counted RUNNING since, so it runs
        if point is None:
            if self._waiting_since is not None and time.monotonic() - self._waiting_since < self.WAIT_POLL_S:
                return None
            complete, running = self._counts()
            if complete + running >= self.budget and self._await_writes(self.WAIT_POLL_S):
                # No trial can start now, and what holds the budget may be this driver's own
                # results on their way to the storage: once they are written the count is
                # final, and a met budget ends the search now rather than at Tune's next
                # call (a second later).
                complete, running = self._counts()
            if complete >= self.budget:
                return Searcher.FINISHED if not self.live else None
            if complete + running >= self.budget:
                # Enough in flight across the drivers; a failure among them frees a slot.
                self._waiting_since = time.monotonic()
                return None
            self._waiting_since = None
            point = self._ask_point(self.budget - complete - running)
        trial, config, sampled, group = point
        self.live[trial_id] = trial
        if group:
            self.variants[trial_id] = group
        self._marks[trial_id] = {"sampled": sampled, "handed": time.time()}
        self._ask_ahead()
        return config

    @property
    def held(self) -> int:
        """Finished results this driver holds that the storage does not have: waiting for
        the writer, or kept in the unsaved file for the next launch (search.driver.tell's retry
        lines count them)."""
        return self._handed - self._settled + self.unsaved_count

    @property
    def in_flight(self) -> int:
        """Trials this driver runs now, variants included."""
        return len(self.live) + sum(len(group) for group in self.variants.values())

    def _ask_point(self, room: int | None = None) -> tuple[optuna.Trial, dict, float, list[optuna.Trial]]:
        """Ask the sampler for a trial and its params, and for up to `room` - 1 variants
        of its training (search.trial.variants); (trial, Tune config, when chosen, variants)."""
        trial = self._ask_claimed()
        owners: dict = {}
        # Retried as a whole: a param already stored is read back, not drawn again (Optuna's
        # suggest returns a trial's existing value), so a storage fault half-way loses nothing.
        params = outages.retrying(lambda: suggest_params(trial, self.spec, self.task_kind, self.plugins,
                                                      baseline=baseline.is_baseline(trial), owners=owners))
        seed = self.spec.seed + trial.number
        wanted = 0
        if self.spec.budget.variants_per_training > 1:
            # Queued points (an interrupted run's, a warm start's) keep their share of the budget.
            storage, study_id = optuna_internals.storage_of(self.study), optuna_internals.study_id(self.study)
            waiting = len(outages.retrying(lambda: storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,))))
            wanted = min(self.spec.budget.variants_per_training, (room if room is not None else self._room()) - waiting) - 1
        group = self._ask_variants(trial, owners, seed, wanted) if wanted > 0 and self.task_kind != "table" else []
        attrs = {SEED_ATTR: seed, **({variants.TRAINING_ATTR: trial.number} if group else {})}
        optuna_id = optuna_internals.trial_id(trial)
        outages.retrying(lambda: storages.set_user_attrs(optuna_internals.storage_of(self.study), optuna_id, attrs))
        config = {"params": params, "seed": seed, "number": trial.number}
        if group:
            config[variants.KEY] = [{"params": p, "number": v.number} for v, p in group]
        return trial, config, time.time(), [v for v, _ in group]

    def _room(self) -> int:
        """Trials the budget has room for now (every driver's COMPLETE and RUNNING counted)."""
        complete, running = self._counts()
        return self.budget - complete - running

    def _ask_variants(self, trial: optuna.Trial, owners: dict, seed: int, count: int) -> list[tuple[optuna.Trial, dict]]:
        """`count` variants of `trial`'s training: its training params fixed, the rest
        proposed by the sampler; each with the training's seed and number."""
        fixed = variants.shared_params(trial.params, owners)
        group = []
        for _ in range(count):
            variant = outages.retrying(lambda: variants.ask(self.study, fixed))
            if self.driver is not None:
                outages.retrying(lambda: self.driver.claim(variant))
            params = outages.retrying(lambda: suggest_params(variant, self.spec, self.task_kind, self.plugins))
            outages.retrying(lambda: storages.set_user_attrs(optuna_internals.storage_of(self.study), optuna_internals.trial_id(variant),
                                                          {SEED_ATTR: seed, variants.TRAINING_ATTR: trial.number}))
            group.append((variant, params))
        return group

    def _ask_ahead(self) -> None:
        """Start asking the next trial in the background, if the budget has room for it.

        Trials are short next to a sampler that reads the whole study (TPE on a few
        hundred trials: ~50 ms, on the search's event loop): asked ahead, that time
        overlaps training. The trial asked ahead knows every result but those of the
        trials running meanwhile (the constant liar stands in for them, as it does for
        every running trial).

        Only a trial the search will need is asked ahead: the budget has room for it
        (every driver's COMPLETE and RUNNING trials counted), and the search would go on
        even if every trial in flight failed or were infeasible. Only one ask runs at a
        time (`suggest` asks itself only once the one ahead is taken). Tells go on beside
        it on other threads: Optuna's storages are thread-safe, and the samplers paretune
        makes (search.driver.samplers) keep no state between a trial's tell (`after_trial`) and
        the next ask."""
        if not self.pipelined or self._ahead is not None:
            return
        in_flight = self.in_flight  # a stop (max_failed, max_infeasible) must not leave it unrun
        if self.failed + in_flight >= self.max_failed or self.pruned[pruned.BEFORE_TRAINING] + in_flight >= self.max_infeasible:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paretune-ask")

        def ask() -> tuple[optuna.Trial, dict, float, list[optuna.Trial]] | None:
            room = self._room()
            return self._ask_point(room) if room > 0 else None

        self._ahead = self._pool.submit(ask)

    def _take_ahead(self) -> tuple[optuna.Trial, dict, float, list[optuna.Trial]] | None:
        """The trial asked ahead (waiting for its sampler if it is not done), or None."""
        future, self._ahead = self._ahead, None
        return future.result() if future is not None else None

    def _ask_claimed(self) -> optuna.Trial:
        while True:
            trial = outages.retrying(self.study.ask)
            if self.driver is None:
                return trial
            try:
                outages.retrying(lambda: self.driver.claim(trial))
                return trial
            except optuna.exceptions.UpdateFinishedTrialError:
                # Reconciled as unclaimed before the claim got through (a storage slower
                # than lease.UNCLAIMED_GRACE_S): it is FAIL now, ask another.
                continue

    # --- what a scheduler (search.driver.moasha) tells the searcher ---------------------------

    def pending_attrs(self, trial_id: str) -> dict:
        """User attrs waiting to be stored with the outcome of Tune trial `trial_id`."""
        return self._attrs.get(trial_id, {})

    def remember(self, trial_id: str, attrs: dict, *, write_now: bool = False) -> None:
        """Store `attrs` with the trial's outcome; with `write_now` also at once, so other
        drivers and a resumed driver read them while the trial still runs (a storage
        that fails now gets them with the outcome)."""
        self._attrs.setdefault(trial_id, {}).update(attrs)
        trial = self.live.get(trial_id)
        if not write_now or trial is None:
            return
        try:
            optuna_id = optuna_internals.trial_id(trial)
            outages.retrying(lambda: storages.set_user_attrs(optuna_internals.storage_of(self.study), optuna_id, attrs))
        except outages.StorageUnavailable as exc:
            log.warning("trial %d: %s not written yet (%s); kept for its outcome", trial.number, ", ".join(attrs), exc)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another driver reconciled it; its outcome goes through `tell.record`

    def stop_as(self, trial_id: str, reason: str, *, pruned: bool) -> None:
        """The scheduler stops Tune trial `trial_id`: store it PRUNED (or FAIL) with `reason`
        when it completes, whatever its last result says."""
        self._stops[trial_id] = Stop(reason, pruned)

    # --- outcomes --------------------------------------------------------------------

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        received = time.time()
        self._raise_failed_write()
        # The trial stays live until its outcome is stored: a search stopped meanwhile
        # (search.driver.stop_signals) then stores it FAIL in `close`, never leaves it RUNNING.
        trial = self.live.get(trial_id)
        stop = self._stops.pop(trial_id, None)
        attrs = self._attrs.pop(trial_id, {})
        marks = self._marks.pop(trial_id, {})
        if trial is None:
            return
        self._waiting_since = None  # decide afresh at the next suggest
        result = None if error else result
        worker = json.loads((result or {}).get(timing.ATTR) or "{}")
        shared = {timing.ATTR: {
            "phases": worker.get("phases", {}),
            "marks": {**worker.get("marks", {}), **marks, "result": received},
        }}
        outcomes = [(trial, *self._outcome(result, stop, error, {**shared, **attrs}))]
        by_number = {r.get("number"): r for r in variants.decode(result)}
        for variant in self.variants.get(trial_id, []):
            own = by_number.get(variant.number) if result is not None else None
            if result is not None and own is None:
                own = {"fail_reason": "its training reported no result for it"}
            extra = dict(shared)
            if stop is not None and pruned.EPOCH_ATTR in attrs:  # stopped with its training at that rung
                extra[pruned.EPOCH_ATTR] = attrs[pruned.EPOCH_ATTR]
            outcomes.append((variant, *self._outcome(own, stop, error, extra)))
        self._handed += len(outcomes)
        if not self.pipelined:
            self._store(trial_id, outcomes)
            return
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paretune-store")
        self._writes = [w for w in self._writes if not w.done() or w.exception() is not None]
        self._writes.append(self._writer.submit(self._store, trial_id, outcomes))

    def _outcome(self, result: dict | None, stop: Stop | None, error: bool, extra: dict) -> tuple:
        """What to store for one trial of a Tune trial's result: (values, attrs, reason,
        pruned), counting failures and pruned trials of this run."""
        attrs = {**stored_attrs(result), **extra}
        before = feasibility.from_result(result)
        if before:
            attrs[feasibility.ATTR] = before
        is_pruned = False
        if stop is not None:  # stopped by the scheduler: its last result is a low-fidelity one
            values, reason, is_pruned = None, stop.reason, stop.pruned
        elif error:
            values, reason = None, "the trial's worker failed (after retries)"
        elif result and result.get(pruned.REASON_ATTR):  # infeasible before training
            values, reason, is_pruned = None, str(result[pruned.REASON_ATTR]), True
            attrs[pruned.EPOCH_ATTR] = 0
        else:
            values, reason = objective_values(result, self.spec.objective_names)
        if is_pruned:
            self.pruned[pruned.BEFORE_TRAINING if attrs.get(pruned.EPOCH_ATTR) == 0 else pruned.AT_RUNG] += 1
            if self.spec.constraints:  # what the sampler learns feasibility from
                attrs[tell.CONSTRAINTS_ATTR] = feasibility.violations(self.spec, before)
        elif values is None:
            reason = reason or "unknown failure"
            self.failed += 1
        elif self.spec.constraints:
            attrs[tell.CONSTRAINTS_ATTR] = [c.violation(result) for c in self.spec.constraints]
        return values, attrs, None if values is not None else reason, is_pruned

    def _store(self, trial_id: str, outcomes: list[tuple]) -> None:
        """Store the outcomes of one Tune trial (its trial and its variants: `tell.record`),
        then let it go from `live`; on the writer thread when pipelined. Until stored, the
        trials count RUNNING in the storage, so budgets and other drivers see them in flight."""
        for trial, values, attrs, reason, is_pruned in outcomes:
            try:
                stored = tell.record(self.study, trial, values, attrs, reason=reason, pruned=is_pruned, unsaved=self.unsaved)
            finally:
                self._settled += 1
            if trial_id in self.variants and trial in self.variants[trial_id]:
                self.variants[trial_id].remove(trial)
            if stored is None:
                self.unsaved_count += 1
                continue
            self.told += 1
            if self.on_told is not None:
                self.on_told(outages.retrying(lambda: optuna_internals.storage_of(self.study).get_trial(stored)))
        self.variants.pop(trial_id, None)
        self.live.pop(trial_id, None)

    def _raise_failed_write(self) -> None:
        """A write that failed on the writer thread fails here, where it would have."""
        for write in self._writes:
            if write.done() and write.exception() is not None:
                self._writes.remove(write)
                raise write.exception()

    def _await_writes(self, timeout: float) -> bool:
        """Wait up to `timeout` s for the outcomes handed to the writer; False if none was pending."""
        pending = [w for w in self._writes if not w.done()]
        if pending:
            wait(pending, timeout=timeout)
        return bool(pending)

    def _drain_writes(self) -> None:
        """Wait for every outcome handed to the writer; log (not raise) what failed."""
        for write in self._writes:
            try:
                write.result()
            except Exception as exc:  # noqa: BLE001 - its trial stays live: `close` fails it
                log.error("storing a trial's outcome failed: %s", exc)
        self._writes = []
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None

    def close(self, reason: str = INTERRUPTED) -> int:
        """Fail every trial still live (Ctrl-C, SIGTERM, driver shutdown), and the one
        asked ahead; returns how many. Their params are queued at once where another
        driver of the study is alive to run them, else by the next launch
        (`tell.requeue_interrupted`), so a stopped study holds no WAITING trial."""
        self._drain_writes()  # what finished is stored as it finished
        try:
            ahead = self._take_ahead()
        except Exception:  # noqa: BLE001 - its ask failed: there is no trial to finish
            ahead = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        trials = [self.live.pop(trial_id) for trial_id in list(self.live)]
        trials += [v for group in self.variants.values() for v in group]
        self.variants.clear()
        trials += [ahead[0], *ahead[3]] if ahead is not None else []
        self._stops.clear()
        self._attrs.clear()
        self._marks.clear()
        requeue = bool(trials) and self._other_drivers_alive()
        for trial in trials:
            optuna_id = optuna_internals.trial_id(trial)
            if tell.fail(self.study, optuna_id, reason) and requeue:  # live trials have all their params
                tell.requeue_once(self.study, optuna_internals.storage_of(self.study).get_trial(optuna_id))
        return len(trials)

    def _other_drivers_alive(self) -> bool:
        if self.driver is None:
            return False
        try:
            storage, study_id = optuna_internals.storage_of(self.study), optuna_internals.study_id(self.study)
            drivers = outages.retrying(lambda: lease.records(storage, study_id))
        except outages.StorageUnavailable:
            return False  # the next launch queues them
        return any(record.alive() for driver_id, record in drivers.items() if driver_id != self.driver.id)

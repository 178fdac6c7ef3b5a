"""Launch (or resume) a search: validate everything, then run trials on Ray Tune with an
Optuna ask/tell searcher writing to the Optuna storage.

Order matters for bad input: the spec, the dataset, the Ray address and the storage
URL are all checked before Ray starts or the study is created.

Several drivers may run one study at once: each holds a lease (`search.driver.lease`), the
budget is read from the storage (`search.driver.searcher`), and results always land
(`search.driver.tell`).
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from search.core import outages
from search.core import storage as storages
from search.core.errors import UsageError
from search.core.spec import StudySpec, to_toml_dict
from search.driver import cluster, node_loss, pruned, raynoise, stop_signals, tell, warmstart
from search.driver.lease import DriverLease
from search.driver.moasha import MOASHAScheduler
from search.driver.samplers import make_sampler
from search.driver.searcher import AskTellSearcher, reconcile_running, settle
from search.results import dashboard, tracking
from search.tasks import baseline
from search.tasks.data import load_task
from search.tasks.plugins import Plugins, dimensions, resolve
from search.tasks.task import Task
from search.trial import preflight, variants
from search.trial.pipeline import train_device
from search.trial.runner import trainable
from search.trial.training import train_recipe
from spaces import StudyContext

# Tune's default CSV/JSON/TensorBoard loggers cost time per trial and duplicate what
# the Optuna storage keeps.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

optuna.logging.set_verbosity(optuna.logging.WARNING)
# With the loggers off, Tune's end-of-run analysis warns that it found no result files.
logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


@dataclass
class LaunchSummary:
    study_name: str
    storage_url: str
    budget: int
    complete: int
    failed_this_run: int
    reconciled: int
    interrupted: bool
    wall_seconds: float
    interrupted_trials: int = 0  # trials still running when the search stopped, stored as FAIL
    told_this_run: int = 0  # outcomes this driver stored (COMPLETE or FAIL)
    replayed: int = 0  # outcomes an earlier run could not store, added now
    unsaved: int = 0  # outcomes the storage would not take: they wait in unsaved_path
    unsaved_path: str = ""
    pruned_before_training: int = 0  # this run's trials PRUNED as infeasible before training
    pruned_at_rung: int = 0  # this run's trials PRUNED by MO-ASHA at a rung
    infeasible_stop: bool = False  # stopped after budget.max_infeasible_trials infeasible trials
    stop_signal: int | None = None  # SIGTERM or SIGHUP, when one stopped the search (search.driver.stop_signals)
    requeued: int = 0  # trials an earlier run stopped short, queued at the start to run again
    tracking: str = ""  # where the study's MLflow runs are, or why some are not yet (search.results.tracking)


def check_address(address: str | None) -> None:
    """Fail fast (exit 2) on an address nothing listens on, instead of Ray's long retry."""
    if not address or address == "auto":
        return
    host_port = address.split("://", 1)[-1]
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--address {address}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection((host, int(port)), timeout=3):
            pass
    except OSError as exc:
        raise UsageError(f"--address {address}: cannot connect ({exc.strerror or exc})") from None


# Sampler seeds of drivers that share a study are this far apart (see `open_study`).
DRIVER_SEED_STRIDE = 100_003


def open_study(
    spec: StudySpec,
    storage: optuna.storages.BaseStorage,
    task_kind: str | None = None,
    *,
    driver: DriverLease | None = None,
    on_reconciled: Callable[[optuna.trial.FrozenTrial, str], None] | None = None,
    plugins: Plugins | None = None,
) -> tuple[optuna.Study, int]:
    """Create or load the study named after the spec in `storage` (from
    `storage.open_storage`), start `driver`'s lease in it, and mark FAIL the trials of
    drivers that are gone; returns the study and how many such trials there were."""
    exists = storages.study_exists(storage, spec.name)
    if exists:
        study = optuna.load_study(study_name=spec.name, storage=storage)
        wanted = [optuna.study.StudyDirection[d.upper()] for d in spec.directions]
        if list(study.directions) != wanted or study.user_attrs.get("objectives", spec.objective_names) != spec.objective_names:
            raise UsageError(
                f"study {spec.name!r} exists with objectives {study.user_attrs.get('objectives')}; "
                "use another name or storage to change objectives"
            )
    study = optuna.create_study(study_name=spec.name, storage=storage, directions=spec.directions, load_if_exists=True)
    if not exists:
        study.set_user_attr("objectives", spec.objective_names)
        study.set_user_attr("spec", to_toml_dict(spec))
        if task_kind is not None:  # export and retrain read it instead of guessing from the spec
            study.set_user_attr("task_kind", task_kind)
    if study.metric_names != spec.objective_names:
        # optuna-dashboard and optuna.visualization label the axes with these.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(spec.objective_names)
    ordinal = 0
    if driver is not None:
        driver.start(study)
        ordinal = driver.ordinal()
    # A resumed sampler gets a new seed: the old one would re-propose the start-up
    # trials already in the storage. Drivers sharing the study each get their own.
    previous = len(study.get_trials(deepcopy=False))
    study.sampler = make_sampler(spec, spec.seed + previous + DRIVER_SEED_STRIDE * ordinal)
    if spec.weights is not None and task_kind is not None:
        # The weights fit the baseline's model only: its build params are fixed, the rest searched.
        study.sampler = optuna.samplers.PartialFixedSampler(baseline.optuna_params(spec, task_kind, plugins, stage="build"), study.sampler)
    own = driver.id if driver is not None else None
    return study, reconcile_running(study, own=own, on_reconciled=on_reconciled)


def init_ray(address: str | None) -> bool:
    """Connect to `address` or start a local Ray; returns True if this call started it."""
    if os.environ.get("PARETUNE_NO_RAY"):  # set by the test suite for tests not marked `ray`
        raise RuntimeError(f"Ray refused: $PARETUNE_NO_RAY is set ({os.environ['PARETUNE_NO_RAY']}, not marked ray)")
    return cluster.init(address)


def prepare_study(spec: StudySpec, task: Task, plugins: Plugins | None = None) -> dict:
    """Each dimension's once-per-launch work (distillation trains its teacher), by
    dimension name; shipped once to every trial through Ray's object store."""
    if task.kind == "table":
        return {}
    device = train_device(spec)
    ctx = StudyContext(spec, task, lambda model, recipe, epochs, seed: train_recipe(model, task, recipe, epochs, seed, device))
    shared = {}
    for dimension in dimensions(plugins):
        value = dimension.prepare_study(spec, task, ctx)
        if value is not None:
            shared[dimension.name] = value
    return shared


@contextmanager
def _callbacks_uncounted() -> Iterator[None]:
    """Ray Tune counts a run's callback classes for its usage statistics, and imports the
    MLflow, W&B, Comet and Aim integrations to compare them against: with mlflow installed
    that import alone is 0.9 s of every launch. With usage statistics off (paretune's
    default, above) the count is never reported, so the tagging is skipped; with them on,
    Tune counts as it always does."""
    from ray._common.usage.usage_lib import usage_stats_enabled  # deferred: with Ray Tune
    from ray.air._internal import usage as air_usage

    if usage_stats_enabled():
        yield
        return
    counted = air_usage.tag_callbacks
    air_usage.tag_callbacks = lambda callbacks: False
    try:
        yield
    finally:
        air_usage.tag_callbacks = counted


def run_trials(
    spec: StudySpec,
    task: Task,
    study: optuna.Study,
    *,
    on_told: Callable[[optuna.trial.FrozenTrial], None] | None = None,
    shared: dict | None = None,
    plugins: Plugins | None = None,
    target: Callable | None = None,
    driver: DriverLease | None = None,
    unsaved: Path | None = None,
    scheduler: Callable[[AskTellSearcher], object] | None = None,
    time_budget_s: float | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> AskTellSearcher:
    """`shared`: `prepare_study`'s results; `plugins`: the user's code. `target`:
    another function trainable with `trainable`'s signature (the orchestration
    benchmark times this exact path with a trivial one). `driver`: this driver's
    lease, started (`open_study`); without one, a lease for this call alone.
    `scheduler(searcher)`: a Tune scheduler in place of the spec's
    (`budget.early_stopping`), and `time_budget_s`: a wall-clock limit (trials still
    running then are interrupted); both for the early-stopping benchmark.
    `on_notice(text)`: a trial's node or worker lost (search.driver.node_loss)."""
    from ray import tune  # deferred: Ray Tune's import starts its own machinery

    own_lease = driver is None
    if own_lease:
        driver = DriverLease()
        driver.start(study)
        driver.on_beat = lambda: reconcile_running(study, own=driver.id)
    budget = spec.budget
    searcher = AskTellSearcher(
        study,
        spec,
        task.kind,
        budget=budget.trials,
        max_failed=budget.max_failed_trials if budget.max_failed_trials is not None else budget.trials,
        on_told=on_told,
        plugins=plugins,
        driver=driver,
        unsaved=unsaved,
        max_infeasible=budget.max_infeasible_trials,
        pipelined=True,
    )
    if scheduler is None and spec.stopping != "none":
        scheduler = lambda searcher: MOASHAScheduler(searcher, spec, guarded=spec.stopping == "auto")  # noqa: E731
    resources = {"cpu": spec.resources.cpus_per_trial, "gpu": spec.resources.gpus_per_trial}
    runnable = tune.with_resources(
        tune.with_parameters(target or trainable, task=task, spec=spec, shared=shared or {}, plugins=plugins), resources
    )
    tune_dir = tempfile.mkdtemp(prefix="paretune-tune-")
    tuner = tune.Tuner(
        runnable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler(searcher) if scheduler is not None else None,  # None: FIFO, every trial trains fully
            num_samples=-1,  # the searcher decides when the budget is met
            max_concurrent_trials=budget.concurrency,
            reuse_actors=True,
            time_budget_s=time_budget_s,
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=tune_dir,
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=budget.max_retries),
            callbacks=[node_loss.NodeLoss(on_notice or (lambda text: print(text, flush=True)))],
        ),
    )
    with outages.holding(lambda: searcher.held), _callbacks_uncounted():
        try:
            tuner.fit()
        finally:
            searcher.interrupted_trials = searcher.close()  # the summary counts them
            if own_lease:
                driver.stop()
    return searcher


def launch(
    spec: StudySpec,
    *,
    storage_url: str | None = None,
    address: str | None = None,
    on_start: Callable[[optuna.Study, int], None] | None = None,
    on_told: Callable[[optuna.trial.FrozenTrial], None] | None = None,
    plugins: Plugins | None = None,
    drop_unsupported: bool = False,
    on_preflight: Callable[[preflight.PreflightReport], None] | None = None,
    enqueue: Sequence[warmstart.Seed] = (),
    on_reconciled: Callable[[optuna.trial.FrozenTrial, str], None] | None = None,
    on_notice: Callable[[str], None] | None = None,
    target: Callable | None = None,
) -> LaunchSummary:
    """Run (or resume) the search of `spec` until its budget of COMPLETE trials is in
    the storage. Everything a user can get wrong is checked before Ray starts or the
    storage is written: the spec, the user's code (`plugins`, else what the spec
    references), the data, the preflight of every enabled choice, the address and
    the storage URL. `enqueue`: known configs to run first (see `search.driver.warmstart`).
    `on_reconciled(trial, reason)`: a trial of a driver that is gone was marked FAIL
    (at the start, or later from the heartbeat thread while this driver runs).
    `on_notice(text)`: what the driver is waiting for. `target`: see `run_trials`."""
    started = time.perf_counter()
    plugins = plugins if plugins is not None else resolve(spec)
    task = load_task(spec, plugins.task)
    seeds = warmstart.check_all(list(enqueue), spec, task.kind, plugins)  # a bad seed stops here, before Ray starts
    checked = preflight.run(spec, task, plugins, drop_unsupported=drop_unsupported)
    if on_preflight is not None:
        on_preflight(checked)
    checked.check()
    spec = checked.spec
    variants.check(spec, plugins)
    if spec.weights is not None:
        preflight.check_weights(spec, task, plugins)  # fits the baseline's model, before Ray starts
    if baseline.wanted(spec, task.kind):
        baseline.optuna_params(spec, task.kind, plugins)  # `[baseline] params` fit the space
    if spec.tracking.mlflow:
        tracking.check_installed()
    check_address(address)
    driver = DriverLease()  # a bad $PARETUNE_LEASE_S stops here too
    storage = storages.open_storage(storage_url)  # a bad URL stops here, before Ray starts
    storages.serialize_sqlite(storage)  # drivers may share it
    url = storages.resolve_url(storage_url)
    started_ray = init_ray(address)
    tracker = None
    try:
        # Again now: ray.init put its own SIGTERM handler (sys.exit) in place of ours.
        with stop_signals.caught():
            # Needs the cluster's nodes; checked before the study is created or written.
            cluster.check_resource(spec.resources.measure_on)
            study_is_new = not storages.study_exists(storage, spec.name)
            study, reconciled = open_study(spec, storage, task.kind, driver=driver, on_reconciled=on_reconciled, plugins=plugins)
            driver.on_beat = lambda: reconcile_running(study, own=driver.id, on_reconciled=on_reconciled)
            baseline.enqueue(study, spec, task.kind, plugins)  # first: every trade is stated against it
            warmstart.enqueue(study, seeds, study_is_new)
            unsaved = tell.unsaved_path(spec.name, url)
            replayed = tell.replay(study, unsaved)
            requeued = tell.requeue_interrupted(study)  # what the last stop cut short runs first
            if spec.tracking.mlflow:
                tracker = start_tracking(study, spec, on_notice)
                on_told = chained(on_told, tracker.told)
            if on_start is not None:
                on_start(study, reconciled)
            # Done once here; `tune.with_parameters` ships the results to every worker
            # through the object store, so no trial redoes them (e.g. retrains the teacher).
            shared = prepare_study(spec, task, plugins)
            with raynoise.quiet():  # Ray's messages that do not apply (e.g. from Tune's unused experiment state)
                searcher = run_trials(
                    spec, task, study, on_told=on_told, shared=shared, plugins=plugins, target=target, driver=driver, unsaved=unsaved,
                    on_notice=on_notice,
                )
            if searcher.exhausted:
                settle(study, driver.id, on_wait=on_notice, on_reconciled=on_reconciled)
            dashboard.write_note(study, f" --storage {storages.redact(storage_url)}" if storage_url else "")
    finally:
        tracked = tracker.stop() if tracker is not None else ""
        driver.stop()
        if started_ray:
            import ray

            ray.shutdown()
    complete = len(outages.retrying(lambda: study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))))
    return LaunchSummary(
        study_name=spec.name,
        storage_url=url,
        budget=spec.budget.trials,
        complete=complete,
        failed_this_run=searcher.failed,
        reconciled=reconciled,
        interrupted=not searcher.exhausted,
        wall_seconds=time.perf_counter() - started,
        interrupted_trials=searcher.interrupted_trials,
        told_this_run=searcher.told,
        replayed=replayed,
        unsaved=searcher.unsaved_count,
        unsaved_path=str(unsaved),
        pruned_before_training=searcher.pruned[pruned.BEFORE_TRAINING],
        pruned_at_rung=searcher.pruned[pruned.AT_RUNG],
        infeasible_stop=searcher.infeasible_stop,
        stop_signal=stop_signals.received(),
        requeued=requeued,
        tracking=tracked,
    )


def start_tracking(study: optuna.Study, spec: StudySpec, on_notice: Callable[[str], None] | None) -> tracking.Tracker:
    """The study's MLflow mirror for this driver; the URI is kept in the study for export and train."""
    if study.user_attrs.get(tracking.MLFLOW_ATTR) != spec.tracking.mlflow:
        study.set_user_attr(tracking.MLFLOW_ATTR, spec.tracking.mlflow)
    say = on_notice or (lambda text: print(text, flush=True))
    return tracking.Tracker(spec.tracking.mlflow, study, experiment=spec.tracking.experiment, say=say).start()


def chained(*calls: Callable | None) -> Callable:
    """One callback that calls each of `calls` (None skipped) in order."""
    present = [c for c in calls if c is not None]
    return lambda *args: [call(*args) for call in present] and None

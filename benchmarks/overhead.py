"""Orchestration overhead: what running a trial through paretune costs beyond the trial.

Three ways to run the same trials side by side, in one process, one after another:

- plain Optuna: `study.optimize` with `n_jobs` threads on a fresh SQLite file, the
  floor any Ray-based path is compared with;
- paretune's launch path: `search.driver.launcher.run_trials` itself (AskTellSearcher + Tuner
  with reuse_actors=True, Tune's file loggers off) on a fresh SQLite file, with a
  trivial trainable in place of the trial pipeline;
- Ray Tune's defaults: a Tuner with its own search (BasicVariantGenerator), a new
  actor per trial (reuse_actors=False) and the default CSV/JSON/TensorBoard loggers.

Every path uses the nasbench201 space and the random sampler, so sampling costs the
same everywhere and the difference is orchestration. Two workloads: trivial trials
(report at once: seconds per trial) and fixed-length trials (time.sleep: utilisation =
trial work / (wall × concurrency)).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import Table, ray_session

CONCURRENCY = 2
RESULT = {"accuracy": 0.5, "latency_ms": 1.0, "params": 1000}
LOG = "work.log"


def settings(quick: bool) -> dict:
    return {"trivial": 4, "long": 2, "seconds": 0.5} if quick else {"trivial": 100, "long": 20, "seconds": 5.0}


@dataclass(frozen=True)
class Timing:
    """One run: its wall clock and when each trial's work ran."""

    started: float
    ended: float
    work: list[tuple[float, float]]

    @classmethod
    def read(cls, started: float, ended: float, log: Path, trials: int) -> "Timing":
        work = [tuple(map(float, line.split())) for line in log.read_text().splitlines()]
        if len(work) != trials:
            raise RuntimeError(f"{log}: {len(work)} trials logged, {trials} expected")
        return cls(started, ended, work)

    @property
    def wall(self) -> float:
        return self.ended - self.started

    @property
    def startup(self) -> float:
        """From the call to the first trial's work: actors starting, imports, set-up."""
        return min(s for s, _ in self.work) - self.started

    @property
    def running(self) -> float:
        """From the first trial's work starting to the last one's ending."""
        return max(e for _, e in self.work) - min(s for s, _ in self.work)

    @property
    def busy(self) -> float:
        return sum(e - s for s, e in self.work)


def log_work(log: Path, started: float) -> None:
    """One line per trial: when its work began and ended (wall clock, one machine)."""
    with open(log, "a") as handle:
        handle.write(f"{started} {time.time()}\n")


def trivial_trainable(seconds: float, log: Path):
    """A function trainable that works `seconds`, logs when, then reports fixed
    objectives. Nested, so cloudpickle ships it by value: workers need not import
    this package."""

    def work(config, task=None, spec=None, shared=None, plugins=None):
        import json

        from ray import tune

        started = time.time()
        if seconds:
            time.sleep(seconds)
        group = config.get("variants") or []  # variants of one training (search.trial.variants): one work, N trials
        with open(log, "a") as handle:
            handle.write(f"{started} {time.time()}\n" * (1 + len(group)))
        result = dict(RESULT)
        if group:
            result["variants"] = json.dumps([{"number": v["number"], **RESULT} for v in group])
        tune.report(result)

    return work


def _spec(trials: int):
    from search.core.spec import from_dict

    return from_dict(
        {
            "name": "overhead",
            "task": "nasbench201",
            "sampler": "random",
            "objectives": {"accuracy": "maximize", "latency_ms": "minimize", "params": "minimize"},
            "budget": {"trials": trials, "concurrency": CONCURRENCY, "max_retries": 0, "early_stopping": "none"},
        }
    )


def plain_optuna(trials: int, seconds: float, workdir: Path) -> float:
    import optuna

    from search.core import storage as storages
    from search.driver.samplers import make_sampler
    from search.tasks.plugins import suggest_params

    spec = _spec(trials)
    storage = storages.open_storage(f"sqlite:///{workdir / 'optuna.db'}")
    study = optuna.create_study(storage=storage, directions=spec.directions, sampler=make_sampler(spec, 0))

    def objective(trial):
        suggest_params(trial, spec, "table")
        started = time.time()
        if seconds:
            time.sleep(seconds)
        log_work(workdir / LOG, started)
        return [RESULT[n] for n in spec.objective_names]

    started = time.time()
    study.optimize(objective, n_trials=trials, n_jobs=CONCURRENCY)
    return Timing.read(started, time.time(), workdir / LOG, trials)


def paretune_path(trials: int, seconds: float, workdir: Path) -> float:
    from search.core.storage import open_storage
    from search.driver.launcher import open_study, run_trials
    from search.tasks.data import load_task

    spec = _spec(trials)
    task = load_task(spec)
    study, _ = open_study(spec, open_storage(f"sqlite:///{workdir / 'paretune.db'}"))
    started = time.time()
    searcher = run_trials(spec, task, study, target=trivial_trainable(seconds, workdir / LOG))
    ended = time.time()
    if searcher.complete != trials:
        raise RuntimeError(f"paretune path: {searcher.complete}/{trials} trials COMPLETE")
    return Timing.read(started, ended, workdir / LOG, trials)


def ray_defaults(trials: int, seconds: float, workdir: Path) -> float:
    from ray import tune

    previous = os.environ.get("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS")
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "0"  # Tune's default loggers back on
    try:
        tuner = tune.Tuner(
            tune.with_resources(trivial_trainable(seconds, workdir / LOG), {"cpu": 1}),
            param_space={f"op{i}": tune.choice(range(5)) for i in range(6)},
            tune_config=tune.TuneConfig(num_samples=trials, max_concurrent_trials=CONCURRENCY, reuse_actors=False),
            run_config=tune.RunConfig(storage_path=str(workdir / "tune"), verbose=0),
        )
        started = time.time()
        results = tuner.fit()
        ended = time.time()
    finally:
        if previous is None:
            os.environ.pop("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", None)
        else:
            os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = previous
    if results.num_errors or len(results) != trials:
        raise RuntimeError(f"Ray Tune defaults: {len(results)} results, {results.num_errors} errors")
    return Timing.read(started, ended, workdir / LOG, trials)


def _image_spec(trials: int, variants: int):
    """The digits space (every built-in dimension), random sampler: where variants apply."""
    from search.core.spec import from_dict

    return from_dict({
        "name": "overhead-image", "task": "digits", "sampler": "random",
        "objectives": {"accuracy": "maximize", "latency_ms": "minimize", "params": "minimize"},
        "budget": {"trials": trials, "concurrency": CONCURRENCY, "max_retries": 0, "variants_per_training": variants,
                   "early_stopping": "none"},
    })


def plain_optuna_image(trials: int, workdir: Path) -> "Timing":
    import optuna

    from search.core import storage as storages
    from search.driver.samplers import make_sampler
    from search.tasks.plugins import suggest_params

    spec = _image_spec(trials, 1)
    study = optuna.create_study(storage=storages.open_storage(f"sqlite:///{workdir / 'optuna.db'}"),
                                directions=spec.directions, sampler=make_sampler(spec, 0))

    def objective(trial):
        suggest_params(trial, spec, "image")
        log_work(workdir / LOG, time.time())
        return [RESULT[n] for n in spec.objective_names]

    started = time.time()
    study.optimize(objective, n_trials=trials, n_jobs=CONCURRENCY)
    return Timing.read(started, time.time(), workdir / LOG, trials)


def paretune_image(trials: int, workdir: Path, variants: int) -> "Timing":
    from search.core.storage import open_storage
    from search.driver.launcher import open_study, run_trials
    from search.tasks.data import load_task

    spec = _image_spec(trials, variants)
    task = load_task(spec)
    study, _ = open_study(spec, open_storage(f"sqlite:///{workdir / 'paretune.db'}"), task.kind)
    started = time.time()
    searcher = run_trials(spec, task, study, target=trivial_trainable(0.0, workdir / LOG))
    ended = time.time()
    if searcher.complete != trials:
        raise RuntimeError(f"paretune path, {variants} per training: {searcher.complete}/{trials} trials COMPLETE")
    return Timing.read(started, ended, workdir / LOG, trials)


IMAGE_PATHS = {
    "plain optuna (study.optimize, n_jobs=2 threads)": plain_optuna_image,
    "paretune launch path, 1 trial per training": lambda n, d: paretune_image(n, d, 1),
    "paretune launch path, 4 variants per training": lambda n, d: paretune_image(n, d, 4),
}


PATHS = {
    "plain optuna (study.optimize, n_jobs=2 threads)": plain_optuna,
    "paretune launch path (AskTellSearcher + Tuner, reuse_actors=True, loggers off)": paretune_path,
    "Ray Tune defaults (reuse_actors=False, default loggers)": ray_defaults,
}


def run(quick: bool = False) -> list[Table]:
    size = settings(quick)
    n, k, seconds = size["trivial"], size["long"], size["seconds"]
    timings: dict[str, tuple[Timing, Timing]] = {}
    with ray_session(), tempfile.TemporaryDirectory(prefix="paretune-bench-") as scratch:
        fresh = lambda: Path(tempfile.mkdtemp(dir=scratch))  # noqa: E731 - a new storage and log per run
        # One throwaway Tune run first: Ray's first actors pay process start-up and
        # imports, which would otherwise land on whichever path runs first.
        ray_defaults(2, 0.0, fresh())
        for label, path in PATHS.items():
            timings[label] = (path(n, 0.0, fresh()), path(k, seconds, fresh()))
        image = {label: path(n, fresh()) for label, path in IMAGE_PATHS.items()}
    floor = timings[next(iter(PATHS))][0].wall / n
    rows = []
    for label, (trivial, long) in timings.items():
        rows.append([
            label,
            trivial.wall / n,
            trivial.wall / n / floor,
            trivial.running / n,
            trivial.startup,
            100.0 * long.busy / (long.wall * CONCURRENCY),
            100.0 * long.busy / (long.running * CONCURRENCY),
        ])
    return [
        Table(
            "overhead",
            "Orchestration overhead",
            ["path", f"s per trivial trial (N={n})", "× plain optuna", "s per trial once running",
             "start-up s", f"utilisation % ({k} × {seconds:g} s trials)", "utilisation % once running"],
            rows,
            [
                f"concurrency {CONCURRENCY}; plain optuna and paretune each on a fresh temporary SQLite file, Ray "
                "defaults in Tune's own experiment directory; the random sampler over the nasbench201 space everywhere.",
                "s per trivial trial = wall of the whole run / N (Ray itself already started: that is once per "
                "launch); once running = from the first trial's work starting to the last one's ending, / N; "
                "start-up = from the call until the first trial's work starts (actors, imports, set-up).",
                "utilisation = trial work / (wall × concurrency) on trials that sleep; once running: over the "
                "span from the first trial's start to the last one's end.",
                "a throwaway 2-trial Tune run warms Ray's worker pool first.",
                "goals for the paretune path: <= 0.15 s per trivial trial, >= 90% utilisation on 5 s trials.",
            ],
        ),
        _image_table(image, n),
    ]


def _image_table(image: dict, n: int) -> Table:
    floor = image[next(iter(IMAGE_PATHS))].wall / n
    rows = [[label, t.wall / n, t.wall / n / floor, t.running / n, t.startup] for label, t in image.items()]
    return Table(
        "overhead",
        "Orchestration overhead on the digits space, with variants per training",
        ["path", f"s per trivial trial (N={n})", "× plain optuna", "s per trial once running", "start-up s"],
        rows,
        [
            f"concurrency {CONCURRENCY}; the digits study's space (every built-in dimension, more params to sample than "
            "the nasbench201 table), random sampler, trivial trials, a fresh SQLite file per path.",
            "4 variants per training: one Tune trial carries 4 Optuna trials (one trivial work; search.trial.variants), so "
            "a variant costs its ask and tell but no Ray round trip.",
        ],
    )

"""paretune beside the tools a user would pick instead, on the same work.

Every way gets the same task, search space (paretune's, traced into each tool's own
form), trial pipeline (`search.trial.pipeline`: build, train, compress, deploy, measure), hard
constraint, wall-clock budget, concurrency (2) and seeds, and is judged by the same
yardstick as the early-stopping benchmark (`benchmarks.early_stopping.Yardstick`:
hypervolume % of the union front of every run on the task, cost objectives as log10;
seconds to 90% and 95%). The ways:

- plain Optuna: two processes, each `study.optimize(objective, timeout=budget)` on one
  SQLite study, paretune's TPE settings, the objective calls the trial pipeline
  in-process; no Ray. (Not `n_jobs=2` threads: see `run_plain_optuna`.)
- Ray Tune, stock: `OptunaSearch` (multi-objective, TPE) with `ASHAScheduler` on a
  weighted sum (val accuracy − 0.025 × Σ log2 of the costs measured before training,
  as the early-stopping benchmark's scalarized ASHA). Ray hands a stopped trial's last
  result to `OptunaSearch.on_trial_complete`, so stopped trials are recorded COMPLETE
  with their low-fidelity accuracy: they are counted as the tool records them, and the
  table says how many of its front points are such trials.
- Syne Tune: `MOASHA` (its multi-objective ASHA, random proposals) with its local
  backend: each trial a subprocess running `benchmarks.peers_entry`. The same
  low-fidelity counting applies.
- paretune, default: `early_stopping = "none"`, one trial per training.
- paretune, auto: `early_stopping = "auto"` (search.driver.rung_trust), else the same: the
  effect of early stopping alone.
- paretune, auto ×4: and 4 trials per training (search.trial.variants): paretune's best.

A peer whose package is missing is reported with the reason (`pip install -e
".[bench]"`), never dropped silently. Each run's raw data is one `peers raw {json}`
line on stderr; `from_log(path)` rebuilds the tables.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks import early_stopping as es
from benchmarks.common import Table

ROOT = Path(__file__).resolve().parents[1]
WAYS = ("plain Optuna", "Ray Tune stock", "Syne Tune MOASHA", "paretune default", "paretune auto", "paretune auto ×4")
PACKAGES = {"Syne Tune MOASHA": "syne_tune"}


def settings(quick: bool) -> dict:
    if quick:  # the wiring, end to end: small models, 20 s per way, one seed
        return {"tasks": {"digits": {"epochs": 6, "seconds": 20, "small": True}}, "seeds": [0]}
    return {
        "tasks": {
            "digits": {"epochs": 30, "seconds": 75},
            "digits-slow": {"epochs": 30, "seconds": 75},
            "glyphs": {"epochs": 12, "seconds": 150},
        },
        "seeds": [0, 1, 2],
    }


def spec_for(task: str, way: str, seed: int, size: dict, images: Path | None):
    """The task's spec (the early-stopping benchmark's), set for `way`. digits-slow:
    digits with plain SGD at small learning rates, so accuracy warms up slowly."""
    from search.core.spec import from_dict

    data = es.spec_data("digits" if task == "digits-slow" else task, size, images)
    if task == "digits-slow":
        data["space"]["schedule"] = {"optimizers": ["sgd"], "lr": {"low": 0.0002, "high": 0.005, "log": True},
                                     "schedules": ["constant"]}
    data["name"] = f"peers-{task}-{way.lower().replace(' ', '-').replace('×', 'x')}-{seed}"
    data["seed"] = seed
    data["budget"]["early_stopping"] = "auto" if way.startswith("paretune auto") else "none"
    data["budget"]["variants_per_training"] = 4 if way == "paretune auto ×4" else 1
    if size.get("trials"):
        data["budget"]["trials"] = size["trials"]
    return from_dict(data)


@dataclass
class PeerRun(es.Run):
    low_fidelity: list[bool] = field(default_factory=list)  # per `done` point: recorded from a stopped trial
    skipped: str = ""  # why the way could not run here


def low_on_front(run: PeerRun) -> int:
    """How many points of the run's own final front are low-fidelity records."""
    from search.results.pareto import nondominated_mask

    if not run.done:
        return 0
    points = np.array([p for _, p in run.done])
    mask = nondominated_mask(points)
    return int(sum(low for low, on in zip(run.low_fidelity, mask) if on))


# --- the search space, traced into other tools' forms ---------------------------------


def traced_space(spec, task_kind: str, plugins, draws: int = 400) -> dict:
    """Every Optuna distribution paretune's space suggests (conditional ones included),
    by name: traced from `draws` random proposals through the dimension registry."""
    import optuna

    from search.tasks.plugins import suggest_params

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    space: dict = {}
    for _ in range(draws):
        trial = study.ask()
        suggest_params(trial, spec, task_kind, plugins)
        space.update(trial.distributions)
        study.tell(trial, 0.0)
    return space


def params_from(config: dict, spec, task_kind: str, plugins) -> dict:
    """paretune's params for a flat config another tool proposed (keys it does not need ignored)."""
    import optuna

    from search.tasks.plugins import suggest_params

    return suggest_params(optuna.trial.FixedTrial(config), spec, task_kind, plugins)


def syne_space(space: dict) -> dict:
    """Optuna distributions as Syne Tune domains."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    from syne_tune.config_space import choice, lograndint, loguniform, randint, uniform

    out = {}
    for name, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            out[name] = choice(list(dist.choices))
        elif isinstance(dist, FloatDistribution):
            out[name] = (loguniform if dist.log else uniform)(dist.low, dist.high)
        elif isinstance(dist, IntDistribution):
            out[name] = (lograndint if dist.log else randint)(dist.low, dist.high)
    return out


def measured_values(spec, metrics: dict) -> list[float]:
    return [float(metrics[name]) for name in spec.objective_names]


def feasible(spec, values: dict) -> bool:
    return all(c.violation(values) <= 0 for c in spec.constraints)


def static_costs(params, task, spec, seed, plugins) -> dict:
    """The cost objectives of the config's final form, measured before training (what a
    stopped trial can report beside its accuracy)."""
    from search.trial import feasibility

    return feasibility.measure_untrained(params, task, spec, seed, plugins=plugins)


def score(val_accuracy: float, costs: dict, spec) -> float:
    from search.trial import feasibility

    names = feasibility.static_objectives(spec)
    return val_accuracy - es.LAMBDA * sum(math.log2(max(float(costs[n]), 1e-12)) for n in names)


# --- the ways --------------------------------------------------------------------------


def run_plain_optuna(task_name: str, spec, task, plugins, seconds: float, workdir: Path) -> PeerRun:
    """Two `study.optimize` processes on one SQLite study (Optuna's way to use two cores
    for CPU-bound trials). Not `n_jobs=2`: threads share one process, and torch.fx's
    tracing (static int8) patches `nn.Module.__call__` process-wide, so the other
    thread's training fails (NameError "module is not installed as a submodule"; 4 of
    the first trials of a digits run)."""
    import subprocess

    import optuna

    from search.core.spec import to_toml_dict

    url = f"sqlite:///{workdir / (spec.name + '.db')}"
    spec_path = workdir / f"{spec.name}.json"
    spec_path.write_text(json.dumps(to_toml_dict(spec)))
    optuna.create_study(study_name=spec.name, storage=url, directions=spec.directions)
    started = time.time()
    workers = [
        subprocess.Popen([sys.executable, "-m", "benchmarks.peers", "plain", str(spec_path), url, str(started + seconds),
                          str(i)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for i in range(2)
    ]
    for proc in workers:  # a trial running at the deadline may finish; it is not counted
        try:
            proc.wait(timeout=seconds + 300)
        except subprocess.TimeoutExpired:
            proc.kill()
    run = new_run(task_name, spec, "plain Optuna", seconds, time.time() - started)
    for t in optuna.load_study(study_name=spec.name, storage=url).get_trials(deepcopy=False):
        run.trials += 1
        if t.state.name == "COMPLETE":
            run.complete += 1
            add_point(run, spec, t.datetime_complete.timestamp() - started, t.values, t.user_attrs["feasible"], low=False)
        elif t.state.name == "FAIL":
            run.failed += 1
    return run


def plain_worker(spec_path: str, url: str, deadline: float, worker: int) -> None:
    """One plain Optuna process: TPE (paretune's settings, its own seed), the trial pipeline as the objective."""
    import optuna

    from search.core.spec import from_dict
    from search.driver.samplers import make_sampler
    from search.tasks.data import load_task
    from search.tasks.plugins import resolve
    from search.trial.pipeline import run_pipeline

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = from_dict(json.loads(Path(spec_path).read_text()))
    plugins = resolve(spec)
    task = load_task(spec, plugins.task)
    study = optuna.load_study(study_name=spec.name, storage=url, sampler=make_sampler(spec, spec.seed + 1000 * worker))

    def objective(trial):
        params = params_from_trial(trial, spec, task, plugins)
        result = run_pipeline(params, task, spec, spec.seed + trial.number, plugins=plugins)
        values = result.metrics.to_result()
        trial.set_user_attr("feasible", feasible(spec, values))
        return measured_values(spec, values)

    trials = spec_trials(spec)
    study.optimize(objective, timeout=max(1.0, deadline - time.time()),
                   n_trials=None if trials is None else -(-trials // 2), catch=(Exception,))


class DefineByRun:
    """OptunaSearch's define-by-run space: paretune's suggestions (a class, as Tune pickles its searcher)."""

    def __init__(self, spec, task_kind: str, plugins):
        self.spec, self.task_kind, self.plugins = spec, task_kind, plugins

    def __call__(self, trial) -> None:
        from search.tasks.plugins import suggest_params

        suggest_params(trial, self.spec, self.task_kind, self.plugins)  # the config is trial.params


def params_from_trial(trial, spec, task, plugins) -> dict:
    from search.tasks.plugins import suggest_params

    return suggest_params(trial, spec, task.kind, plugins)


def run_ray_stock(task_name: str, spec, task, plugins, seconds: float, workdir: Path) -> PeerRun:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from search.driver.samplers import make_sampler

    budget = spec.budget

    def trainable(config):
        from search.trial.pipeline import run_pipeline

        params = params_from(config, spec, task.kind, plugins)
        seed = spec.seed
        costs = static_costs(params, task, spec, seed, plugins)

        def on_epoch(epoch: int, val_accuracy: float) -> None:
            tune.report({"epoch": epoch + 1, "accuracy": val_accuracy, **{n: costs[n] for n in costs},
                         "score": score(val_accuracy, costs, spec), "final": False})

        result = run_pipeline(params, task, spec, seed, on_epoch=on_epoch, plugins=plugins, report_epochs=range(1, budget.epochs))
        values = result.metrics.to_result()
        tune.report({**{n: values[n] for n in spec.objective_names}, "epoch": budget.epochs,
                     "score": score(values["accuracy"], values, spec), "final": True, "feasible": feasible(spec, values)})

    searcher = OptunaSearch(space=DefineByRun(spec, task.kind, plugins),
                            metric=spec.objective_names, mode=[d[:3] for d in spec.directions],
                            sampler=make_sampler(spec, spec.seed))
    scheduler = ASHAScheduler(time_attr="epoch", metric="score", mode="max", max_t=budget.epochs,
                              grace_period=budget.grace_epochs, reduction_factor=budget.reduction_factor,
                              stop_last_trials=False)
    started = time.time()
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=spec_trials(spec) or -1,
                                    max_concurrent_trials=2,
                                    time_budget_s=seconds),
        run_config=tune.RunConfig(name=spec.name, storage_path=str(workdir / "ray"), verbose=0),
    )
    grid = tuner.fit()
    run = new_run(task_name, spec, "Ray Tune stock", seconds, time.time() - started)
    for result in grid:
        run.trials += 1
        last = result.metrics or {}
        if result.error is not None or "accuracy" not in last:
            run.failed += 1
            continue
        run.complete += 1  # what OptunaSearch told its study, stopped or not
        values = {n: last[n] for n in spec.objective_names}
        add_point(run, spec, float(last["timestamp"]) - started, measured_values(spec, values),
                  bool(last.get("feasible", feasible(spec, values))), low=not last.get("final"))
    return run


def run_syne_tune(task_name: str, spec, task, plugins, seconds: float, workdir: Path, spec_path: Path) -> PeerRun:
    import pandas as pd
    from syne_tune import StoppingCriterion, Tuner
    from syne_tune.backend import LocalBackend
    from syne_tune.experiments import load_experiment
    from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA

    os.environ["SYNETUNE_FOLDER"] = str(workdir / "syne-tune")
    budget = spec.budget
    config_space = syne_space(traced_space(spec, task.kind, plugins))
    config_space["spec_path"] = str(spec_path)
    metrics = ["error", *spec.objective_names[1:]]  # MOASHA minimizes every metric
    scheduler = MOASHA(config_space, metrics=metrics, do_minimize=True, time_attr="epoch", max_t=budget.epochs,
                       grace_period=budget.grace_epochs, reduction_factor=budget.reduction_factor, random_seed=spec.seed)
    started = time.time()
    backend = LocalBackend(entry_point=str(ROOT / "benchmarks" / "peers_entry.py"), pass_args_as_json=True)
    tuner = Tuner(trial_backend=backend,
                  scheduler=scheduler, stop_criterion=StoppingCriterion(max_wallclock_time=seconds, max_num_trials_finished=spec_trials(spec)), n_workers=2,
                  sleep_time=0.5, results_update_interval=5, print_update_interval=600, tuner_name=spec.name)
    tuner.run()
    run = new_run(task_name, spec, "Syne Tune MOASHA", seconds, time.time() - started)
    frame: pd.DataFrame = load_experiment(tuner.name).results
    if frame is None or frame.empty:
        return run
    for _, rows in frame.groupby("trial_id"):
        last = rows.sort_values("st_tuner_time").iloc[-1]
        run.trials += 1
        run.complete += 1
        values = {"accuracy": 1.0 - float(last["error"]), **{n: float(last[n]) for n in spec.objective_names[1:]}}
        add_point(run, spec, float(last["st_tuner_time"]), measured_values(spec, values),
                  bool(last.get("feasible", True)), low=not bool(last.get("final", False)))
    return run


def run_paretune(task_name: str, spec, way: str, size: dict, workdir: Path) -> PeerRun:
    import optuna

    from search.core import storage as storages
    from search.driver.launcher import open_study, prepare_study, run_trials
    from search.tasks.data import load_task
    from search.tasks.plugins import resolve

    plugins = resolve(spec)
    task = load_task(spec, plugins.task)
    storage = storages.open_storage(f"sqlite:///{workdir / (spec.name + '.db')}")
    study, _ = open_study(spec, storage, task.kind)
    shared = prepare_study(spec, task, plugins)
    started = time.time()
    run_trials(spec, task, study, shared=shared, plugins=plugins, time_budget_s=size["seconds"])
    run = new_run(task_name, spec, way, size["seconds"], time.time() - started)
    es.record(run, optuna.load_study(study_name=spec.name, storage=storage), started)
    run.low_fidelity = [False] * len(run.done)  # PRUNED trials are never COMPLETE
    return run


def spec_trials(spec) -> int | None:
    """A trial count that ends a run before its wall clock (the smoke tests'); None: the clock alone."""
    return spec.budget.trials if spec.budget.trials < 100_000 else None


def new_run(task: str, spec, way: str, seconds: float, wall: float) -> PeerRun:
    return PeerRun(task, way, spec.seed, round(os.getloadavg()[0], 2), seconds, wall, spec.objective_names,
                   spec.directions)


def add_point(run: PeerRun, spec, at: float, values, is_feasible: bool, low: bool) -> None:
    if not is_feasible or at > run.budget_s:
        return
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in spec.directions])
    run.done.append((at, np.asarray(values, dtype=float) * signs))
    run.low_fidelity.append(low)
    order = sorted(range(len(run.done)), key=lambda i: run.done[i][0])
    run.done = [run.done[i] for i in order]
    run.low_fidelity = [run.low_fidelity[i] for i in order]


def run_way(task_name: str, way: str, seed: int, size: dict, images, workdir: Path) -> PeerRun:
    spec = spec_for(task_name, way, seed, size, images)
    package = PACKAGES.get(way)
    if package is not None:
        import importlib.util

        if importlib.util.find_spec(package) is None:
            run = new_run(task_name, spec, way, size["seconds"], 0.0)
            run.skipped = f"{package} is not installed (pip install -e \".[bench]\")"
            return run
    if way.startswith("paretune"):
        return run_paretune(task_name, spec, way, size, workdir)
    from search.tasks.data import load_task
    from search.tasks.plugins import resolve

    plugins = resolve(spec)
    task = load_task(spec, plugins.task)
    if way == "plain Optuna":
        return run_plain_optuna(task_name, spec, task, plugins, size["seconds"], workdir)
    if way == "Ray Tune stock":
        return run_ray_stock(task_name, spec, task, plugins, size["seconds"], workdir)
    from search.core.spec import to_toml_dict

    spec_path = workdir / f"{spec.name}.json"  # read back by benchmarks.peers_entry in each trial
    spec_path.write_text(json.dumps(to_toml_dict(spec)))
    return run_syne_tune(task_name, spec, task, plugins, size["seconds"], workdir, spec_path)


# --- tables ------------------------------------------------------------------------------


def tables(runs: list[PeerRun]) -> list[Table]:
    out = []
    for task in dict.fromkeys(r.task for r in runs):
        mine = [r for r in runs if r.task == task]
        ran = [r for r in mine if not r.skipped]
        yard = es.Yardstick(ran) if ran and any(r.done for r in ran) else None
        budget = mine[0].budget_s
        rows = []
        for way in WAYS:
            group = [r for r in mine if r.method == way]
            if not group:
                continue
            if group[0].skipped or yard is None:
                rows.append([way, 0, "-", "-", "-", "-", "-", "-", "-", "-", group[0].skipped or "no feasible trial"])
                continue
            times = {share: [yard.time_to(r, share) for r in group] for share in es.SHARES}
            end = [100 * yard.share_at(r, budget) for r in group]
            rows.append([
                way, len(group),
                es._median_time(times[0.9], budget), " / ".join(es._fmt_time(t, budget) for t in times[0.9]),
                es._median_time(times[0.95], budget),
                round(100 * float(np.mean([yard.share_at(r, budget / 2) for r in group])), 1),
                round(float(np.mean(end)), 1), round(float(np.std(end)), 1),
                round(float(np.mean([r.complete for r in group])), 1),
                round(float(np.mean([r.failed for r in group])), 1),
                f"{sum(low_on_front(r) for r in group)} low-fidelity front points" if any(any(r.low_fidelity) for r in group) else "",
            ])
        out.append(Table(
            name="peers",
            title=f"paretune and its peers on {task}: wall clock to a share of the reference hypervolume",
            columns=["way", "seeds", "s to 90% (median)", "s to 90% per seed", "s to 95% (median)",
                     f"HV % at {budget / 2:g} s", f"HV % at {budget:g} s", "HV % sd", "COMPLETE", "FAIL", "note"],
            rows=rows,
            notes=[f"each run {budget:g} s of wall clock, 2 trials at a time; reference HV "
                   f"{yard.reference if yard else math.nan:.4f} (union front of the runs that ran; log10 costs, min-max "
                   "normalized, reference point 1.1 each); a stopped trial that a tool records COMPLETE counts as "
                   "it is recorded; loads at start: " + ", ".join(f"{r.method} s{r.seed} {r.load}" for r in mine)],
        ))
    return out


def run(quick: bool = False) -> list[Table]:
    size = settings(quick)
    runs: list[PeerRun] = []
    with tempfile.TemporaryDirectory(prefix="paretune-peers-") as scratch:
        workdir = Path(scratch)
        for task, task_size in size["tasks"].items():
            images = es.glyph_folder(workdir) if task == "glyphs" else None
            for seed in size["seeds"]:
                for way in WAYS:  # interleaved, so a busier hour of the machine hits every way
                    try:
                        result = run_way(task, way, seed, task_size, images, workdir)
                    except Exception as exc:  # noqa: BLE001 - a peer that breaks is reported, not dropped
                        result = new_run(task, spec_for(task, way, seed, task_size, images), way, task_size["seconds"], 0.0)
                        result.skipped = f"failed: {type(exc).__name__}: {exc}"[:200]
                    runs.append(result)
                    print(f"peers: {task} {way} seed {seed}: {result.complete} COMPLETE, {len(result.done)} feasible, "
                          f"{result.failed} FAIL{'; ' + result.skipped if result.skipped else ''}", file=sys.stderr, flush=True)
                    es.print_raw("peers", result)
    return tables(runs)


def from_log(path: Path) -> list[Table]:
    return tables(es.read_raw(Path(path), "peers", PeerRun))


if __name__ == "__main__":  # python -m benchmarks.peers plain SPEC_JSON URL DEADLINE WORKER
    if sys.argv[1] == "plain":
        plain_worker(sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5]))

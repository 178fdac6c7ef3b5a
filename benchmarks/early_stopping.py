"""Early stopping: how fast each way of running trials reaches a share of the best
front anyone found, on real training.

Three ways, same spec, same TPE sampler and seed, same concurrency (2 trials, one
CPU each), each for the same wall-clock budget through the real launch path
(`search.driver.launcher.run_trials`: Ray Tune + AskTellSearcher, a fresh SQLite study):

- full fidelity: every trial trains all its epochs (`early_stopping = "none"`);
- MO-ASHA: `early_stopping = "moasha"` (search.driver.moasha);
- scalarized ASHA: Ray's own `AsyncHyperBandScheduler` (same rungs: time_attr epoch,
  the same grace and reduction factor) on one number, val_accuracy − λ Σ log2(cost)
  over the static objectives measured before training (λ = 0.025: halving latency and
  energy together is worth 3.5 pp of accuracy). Ray's schedulers take one metric; a
  weighted sum is what a Ray user has. Its stopped trials are stored PRUNED too.

Both tasks carry one hard latency constraint, the same for every way, so trials whose
untrained final form is far too slow are PRUNED before training in all three.

Tasks: scikit-learn's digits (8×8, the built-in families, 30 epochs) and the
own-model example (examples/own_model: its small ResNet, pruning, int8, runtimes) on
an image folder written by its make_images.py (1,500 glyphs at 16×16, 12 epochs).

The yardstick, per task: the feasible COMPLETE trials of every run together; the cost
objectives (latency, energy) as log10, each objective min-max normalized over those
trials (minimization), hypervolume against the point (1.1, 1.1, 1.1); the reference
hypervolume is that of their union front. Log costs, because a 2× faster model is as
much progress at 0.01 ms as at 1 ms; on a linear scale the slowest feasible trial sets
the axis, and the first accurate trial of any run already holds ~90% of the reference
(`Yardstick`). Both scales are printed, the log one first. A run's hypervolume at time
t counts its feasible trials COMPLETE by t (from the call that starts its trials).
Reported: wall-clock until a run first holds 90% / 95% of the reference (median over
seeds; a run that never gets there counts as "> budget"), and the hypervolume each
holds at half and at the whole of the budget ("at equal wall-clock"). The load average
at each run's start is recorded: this benchmark was built on 2 cores shared with other
work. Each run's raw data is printed as one `early_stopping raw {json}` line on
stderr; `from_log(path)` rebuilds the tables from a log.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.common import Table

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("full fidelity", "MO-ASHA", "scalarized ASHA")
LAMBDA = 0.025  # per log2 of each static cost objective, in accuracy units
REFERENCE = 1.1
SHARES = (0.9, 0.95)
COSTS = ("latency_ms", "latency_p90_ms", "energy_mj", "size_kb", "params", "macs")


def settings(quick: bool) -> dict:
    if quick:  # a smoke run of the wiring: small models, 7 s per way
        return {"tasks": {"digits": {"epochs": 6, "seconds": 7, "small": True}}, "seeds": [0]}
    return {
        "tasks": {"digits": {"epochs": 30, "seconds": 180}, "glyphs": {"epochs": 12, "seconds": 420}},
        "seeds": [0, 1, 2],
    }


def glyph_folder(directory: Path, count: int = 1500) -> Path:
    folder = directory / "glyphs"
    subprocess.run(
        [sys.executable, str(ROOT / "examples" / "own_model" / "make_images.py"), "--out", str(folder), "--count", str(count)],
        check=True, capture_output=True,
    )
    return folder


def spec_data(task: str, size: dict, images: Path | None) -> dict:
    """The task's spec, before the way of running it is chosen."""
    from search.core.spec import read_toml

    if task == "digits":
        data = read_toml(ROOT / "studies" / "digits.toml")
        data["constraints"] = ["latency_ms <= 0.5"]
        grace = 1
        if size.get("small"):
            data["space"]["architecture"] = {"families": ["mlp", "mobilenet"], "width": [8, 32], "depth": [1, 2]}
    else:
        data = read_toml(ROOT / "examples" / "own_model" / "spec.toml")
        data["task"] = {"images": str(images), "image_size": [16, 16]}
        data["model"] = {"factory": str(ROOT / "examples" / "own_model" / "model.py") + ":build"}
        data["constraints"] = ["latency_ms <= 0.25"]
        grace = 2  # its curves stay at chance for an epoch or two (docs/benchmarks.md)
    data["budget"] = {
        "trials": 100_000, "concurrency": 2, "epochs": size["epochs"], "max_failed_trials": 100_000,
        "max_infeasible_trials": 100_000, "grace_epochs": grace, "reduction_factor": 3,
    }
    return data


def spec_for(task: str, method: str, seed: int, size: dict, images: Path | None):
    from search.core.spec import from_dict

    data = spec_data(task, size, images)
    data["name"] = f"es-{task}-{method.split()[0].lower()}-{seed}"
    data["seed"] = seed
    # Scalarized ASHA needs the pre-training measurement in every epoch's result, as
    # MO-ASHA does; the scheduler is swapped in `run_one`.
    data["budget"]["early_stopping"] = "none" if method == "full fidelity" else "moasha"
    return from_dict(data)


def scalarized_asha(spec):
    """Ray's ASHA on val_accuracy − LAMBDA × Σ log2(static cost objectives)."""
    from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

    from search.driver.pruned import EPOCH_ATTR
    from search.trial import feasibility

    costs = feasibility.static_objectives(spec)
    budget = spec.budget

    class ScalarizedASHA(AsyncHyperBandScheduler):
        def __init__(self, searcher):
            # stop_last_trials=False: a trial at its last epoch still compresses and measures.
            super().__init__(time_attr="epoch", metric="scalar", mode="max", max_t=budget.epochs,
                             grace_period=budget.grace_epochs, reduction_factor=budget.reduction_factor,
                             stop_last_trials=False)
            self.searcher = searcher

        @property
        def metric(self):
            return None  # only epoch results carry the scalar; Tune would demand it of every result

        def __getstate__(self):
            return {k: v for k, v in self.__dict__.items() if k != "searcher"}

        def on_trial_result(self, tune_controller, trial, result):
            if "epoch" not in result or "val_accuracy" not in result:
                return TrialScheduler.CONTINUE
            values = [float(result.get(feasibility.PREFIX + name, math.nan)) for name in costs]
            scalar = float(result["val_accuracy"]) - LAMBDA * sum(math.log2(max(v, 1e-12)) for v in values)
            decision = super().on_trial_result(tune_controller, trial, {**result, "scalar": scalar})
            if decision == TrialScheduler.STOP:
                epoch = int(result["epoch"])
                self.searcher.remember(trial.trial_id, {EPOCH_ATTR: epoch})
                self.searcher.stop_as(trial.trial_id, f"stopped by scalarized ASHA at epoch {epoch} (score {scalar:.4f})",
                                      pruned=True)
            return decision

    return ScalarizedASHA


@dataclass
class Run:
    task: str
    method: str
    seed: int
    load: float  # 1-minute load average at the start
    budget_s: float
    wall_s: float
    objectives: list[str]
    directions: list[str]
    # (seconds from the start, minimization values) of each feasible COMPLETE trial
    done: list[tuple[float, np.ndarray]] = field(default_factory=list)
    trials: int = 0
    complete: int = 0
    before_training: int = 0
    at_rung: int = 0
    failed: int = 0
    check_s: float = 0.0  # mean seconds of a trial's check before training


def run_one(task_name: str, method: str, seed: int, size: dict, images: Path | None, workdir: Path) -> Run:
    import optuna

    from search.core import storage as storages
    from search.driver.launcher import open_study, prepare_study, run_trials
    from search.results import pareto
    from search.tasks.data import load_task
    from search.tasks.plugins import resolve

    spec = spec_for(task_name, method, seed, size, images)
    plugins = resolve(spec)
    task = load_task(spec, plugins.task)
    storage = storages.open_storage(f"sqlite:///{workdir / (spec.name + '.db')}")
    study, _ = open_study(spec, storage, task.kind)
    shared = prepare_study(spec, task, plugins)
    scheduler = scalarized_asha(spec) if method == "scalarized ASHA" else None
    load = round(os.getloadavg()[0], 2)
    started = time.time()
    run_trials(spec, task, study, shared=shared, plugins=plugins, scheduler=scheduler, time_budget_s=size["seconds"])
    wall = time.time() - started
    study = optuna.load_study(study_name=spec.name, storage=storage)
    objectives = pareto.objectives_of(study)
    run = Run(task_name, method, seed, load, size["seconds"], wall, objectives.names, objectives.directions)
    record(run, study, started)
    return run


def record(run: Run, study, started: float) -> None:
    """Fill `run` from its finished study: the feasible COMPLETE trials within the
    budget (seconds from `started`, minimization values), and the counts."""
    from optuna.trial import TrialState

    from search.driver import pruned
    from search.results import pareto

    objectives = pareto.objectives_of(study)
    trials = study.get_trials(deepcopy=False)
    for trial in pareto.feasible_trials(study):
        at = trial.datetime_complete.timestamp() - started
        if at <= run.budget_s:  # Tune checks its time budget between events: a trial may end just after
            run.done.append((at, np.asarray(trial.values, dtype=float) * objectives.signs))
    run.done.sort(key=lambda item: item[0])
    stages = pruned.counts(trials)
    run.trials = sum(t.state != TrialState.WAITING for t in trials)  # (interrupted trials' re-runs wait, queued)
    run.complete = sum(t.state == TrialState.COMPLETE for t in trials)
    run.before_training, run.at_rung = stages[pruned.BEFORE_TRAINING], stages[pruned.AT_RUNG]
    run.failed = sum(t.state == TrialState.FAIL for t in trials)
    checks = [t.user_attrs["pretrain"]["seconds"] for t in trials if isinstance(t.user_attrs.get("pretrain"), dict)]
    run.check_s = statistics.mean(checks) if checks else 0.0


class Yardstick:
    """Normalization and the reference hypervolume of one task, from every run's trials.

    `log_costs`: the cost objectives (latency, energy, size, params, MACs) enter as
    log10 before the min-max normalization, so that halving a latency counts the same
    at 0.01 ms as at 1 ms (the ratios users compare). On a linear scale the slowest
    feasible trial sets the latency axis and nearly every small model sits near 0 on
    it: the first accurate trial of any run then already holds about 90% of the
    reference hypervolume (measured: 8–17 s into digits runs of every way)."""

    def __init__(self, runs: list[Run], log_costs: bool = True):
        self.log_costs = log_costs
        names = runs[0].objectives
        self.logged = [i for i, n in enumerate(names) if log_costs and n in COSTS]
        points = np.array([p for run in runs for _, p in self.points(run)])
        if not len(points):  # no run finished a feasible trial: every share is 0
            self.low = self.high = np.zeros(len(names))
            self.reference = math.nan
            return
        self.low, self.high = points.min(axis=0), points.max(axis=0)
        self.reference = self.hv(points)

    def points(self, run: Run) -> list[tuple[float, np.ndarray]]:
        """The run's (seconds, minimization values), cost objectives as log10 where asked."""
        out = []
        for at, values in run.done:
            values = np.array(values, dtype=float)
            values[self.logged] = np.log10(np.maximum(values[self.logged], 1e-12))
            out.append((at, values))
        return out

    def hv(self, points) -> float:
        from search.core.dominance import hypervolume  # deferred: imports moocore

        points = np.atleast_2d(np.asarray(points, dtype=float))
        if points.size == 0:
            return 0.0
        span = np.where(self.high > self.low, self.high - self.low, 1.0)
        return hypervolume((points - self.low) / span, np.full(points.shape[1], REFERENCE))

    def share_at(self, run: Run, seconds: float) -> float:
        if not math.isfinite(self.reference):
            return 0.0
        return self.hv([p for t, p in self.points(run) if t <= seconds]) / self.reference

    def time_to(self, run: Run, share: float) -> float | None:
        """Seconds until the run first holds `share` of the reference; None if never."""
        for at, _ in run.done:
            if math.isfinite(self.reference) and self.share_at(run, at) >= share - 1e-12:
                return at
        return None


def _median_time(times: list[float | None], budget: float):
    """Median over seeds, a run that never got there counting as past the budget."""
    keyed = sorted(math.inf if t is None else t for t in times)
    middle = keyed[len(keyed) // 2] if len(keyed) % 2 else (keyed[len(keyed) // 2 - 1] + keyed[len(keyed) // 2]) / 2
    return round(float(middle), 1) if math.isfinite(middle) else f"> {budget:g}"


def _fmt_time(t: float | None, budget: float) -> str:
    return f"{t:.0f}" if t is not None else f">{budget:g}"


def tables(runs: list[Run]) -> list[Table]:
    """Per task: the table on log-scaled costs (the yardstick), then the same runs on a
    linear scale (see `Yardstick` for why it says less)."""
    out = []
    for task in dict.fromkeys(r.task for r in runs):
        mine = [r for r in runs if r.task == task]
        out += [task_table(task, mine, log_costs=True), task_table(task, mine, log_costs=False)]
    return out


def task_table(task: str, mine: list[Run], log_costs: bool) -> Table:
    yard = Yardstick(mine, log_costs=log_costs)
    budget = mine[0].budget_s
    rows, full_90 = [], None
    for method in METHODS:
        group = [r for r in mine if r.method == method]
        if not group:
            continue
        times = {share: [yard.time_to(r, share) for r in group] for share in SHARES}
        median_90 = _median_time(times[0.9], budget)
        if method == "full fidelity":
            full_90 = median_90
        speedup = "n/a"
        if isinstance(median_90, float) and median_90 > 0:
            if isinstance(full_90, float):
                speedup = round(full_90 / median_90, 2)
            elif method != "full fidelity":  # full fidelity never got there: a lower bound
                speedup = f"> {budget / median_90:.1f}"
        rows.append([
            method,
            len(group),
            round(statistics.mean(r.load for r in group), 2),
            median_90,
            " / ".join(_fmt_time(t, budget) for t in times[0.9]),
            _median_time(times[0.95], budget),
            " / ".join(_fmt_time(t, budget) for t in times[0.95]),
            speedup,
            round(100 * statistics.mean(yard.share_at(r, budget / 2) for r in group), 1),
            round(100 * statistics.mean(yard.share_at(r, budget) for r in group), 1),
            round(statistics.mean(r.trials for r in group), 1),
            round(statistics.mean(r.complete for r in group), 1),
            round(statistics.mean(r.before_training for r in group), 1),
            round(statistics.mean(r.at_rung for r in group), 1),
        ])
    scale = "log10 of the cost objectives" if log_costs else "linear objectives"
    notes = [
        f"each run {budget:g} s of wall clock, concurrency 2, TPE seeded per run; objectives "
        f"{', '.join(f'{n} {d[:3]}' for n, d in zip(mine[0].objectives, mine[0].directions))}; "
        f"reference HV {yard.reference:.4f} (union front of all {len(mine)} runs; {scale}, min-max normalized over "
        f"their feasible trials, reference point {REFERENCE} each)",
        "speed-up = median seconds to 90% of full fidelity / of this way; HV % = mean over seeds",
    ]
    if log_costs:
        notes += [
            "per-run loads: " + ", ".join(f"{r.method} s{r.seed} {r.load}" for r in mine),
            "runs ended at the budget with their running trials interrupted (stored FAIL): "
            + ", ".join(f"{r.method} s{r.seed} {r.failed}" for r in mine),
            "mean seconds of a trial's measurement before training: "
            + ", ".join(f"{m} {statistics.mean(r.check_s for r in mine if r.method == m):.2f}" for m in METHODS
                        if any(r.method == m for r in mine)),
        ]
    return Table(
        name="early_stopping",
        title=f"Early stopping on {task} ({scale}): wall-clock to a share of the reference hypervolume",
        columns=["way", "seeds", "load avg at start", "s to 90% (median)", "s to 90% per seed", "s to 95% (median)",
                 "s to 95% per seed", "speed-up to 90% vs full", f"HV % at {budget / 2:g} s", f"HV % at {budget:g} s",
                 "trials", "COMPLETE", "PRUNED before training", "PRUNED at a rung"],
        rows=rows,
        notes=notes,
    )


def run(quick: bool = False) -> list[Table]:
    size = settings(quick)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="paretune-es-") as scratch:
        workdir = Path(scratch)
        for task, task_size in size["tasks"].items():
            images = glyph_folder(workdir) if task == "glyphs" else None
            for seed in size["seeds"]:
                for method in METHODS:  # interleaved, so a busier hour of the machine hits every way
                    runs.append(run_one(task, method, seed, task_size, images, workdir))
                    print(f"early_stopping: {task} {method} seed {seed}: {runs[-1].complete} COMPLETE, "
                          f"{runs[-1].at_rung} stopped at a rung, {runs[-1].before_training} before training, "
                          f"load {runs[-1].load}", file=sys.stderr, flush=True)
                    print_raw("early_stopping", runs[-1])
    return tables(runs)


def _plain(value):
    return value.tolist() if hasattr(value, "tolist") else str(value)


def print_raw(name: str, run: Run) -> None:
    """The raw run, one JSON line on stderr: the tables can be rebuilt from a log (`read_raw`)."""
    print(f"{name} raw " + json.dumps(dataclasses.asdict(run), default=_plain), file=sys.stderr, flush=True)


def read_raw(path: Path, name: str, kind: type = Run) -> list:
    """The runs of the `NAME raw` lines a (possibly interrupted) benchmark printed."""
    runs = []
    prefix = f"{name} raw "
    for line in Path(path).read_text().splitlines():
        if line.startswith(prefix):
            data = json.loads(line[len(prefix):])
            data["done"] = [(at, np.asarray(values, dtype=float)) for at, values in data["done"]]
            runs.append(kind(**data))
    return runs


def from_log(path: Path) -> list[Table]:
    """The tables from the raw lines a (possibly interrupted) run printed."""
    return tables(read_raw(path, "early_stopping"))

"""Search efficiency: how much of NAS-Bench-201's true Pareto front each sampler finds
within a budget.

Objectives: accuracy (max), latency_ms (min), params (min), from the table. Every
architecture is known, so the true front is too. Hypervolume (moocore) is taken on
objectives normalised over the whole table (0 = the table's best value, 1 = its
worst) against the fixed reference point (1.1, 1.1, 1.1), and reported as a
percentage of the true front's hypervolume.

The samplers are paretune's own (`search.driver.samplers.make_sampler`, configured for each
budget, as a launch would), asking through `spaces.suggest`. The many seed × budget
runs drive them with plain Optuna ask/tell in this process (sequential, no Ray: a run
of 200 costs seconds); one run goes through the real launch path (Ray Tune +
AskTellSearcher, concurrency 2) to show the wiring gives the same kind of result.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import Table, ray_session

NAMES = ["accuracy", "latency_ms", "params"]
REFERENCE = 1.1
TARGET = 0.9


def settings(quick: bool) -> dict:
    if quick:
        return {"budgets": [20, 50], "seeds": 3, "samplers": ["tpe", "nsga2", "random"], "gp_seeds": 0, "launch": 20}
    # GP costs ~3 s per trial with three objectives on 2 cores: budget 50 and 3 seeds only.
    return {"budgets": [50, 100, 200], "seeds": 5, "samplers": ["tpe", "nsga2", "gp", "random"], "gp_seeds": 3, "launch": 50}


def spec_for(sampler: str, seed: int, budget: int, name: str = "efficiency"):
    from search.core.spec import from_dict

    return from_dict(
        {
            "name": name,
            "task": "nasbench201",
            "sampler": sampler,
            "seed": seed,
            "objectives": {"accuracy": "maximize", "latency_ms": "minimize", "params": "minimize"},
            "budget": {"trials": budget, "concurrency": 2},
        }
    )


class Yardstick:
    """Normalisation and the true front's hypervolume, from the whole table."""

    def __init__(self, names: list[str] = NAMES):
        from search.tasks import tabular_bench

        points = tabular_bench.minimization_points(names)
        self.low, self.high = points.min(axis=0), points.max(axis=0)
        self.front = tabular_bench.true_front(names)
        self.true_hv = self.hv(self.front)

    def hv(self, points: np.ndarray) -> float:
        from search.core.dominance import hypervolume  # deferred: imports moocore

        scaled = (np.asarray(points, dtype=float) - self.low) / (self.high - self.low)
        return hypervolume(scaled, np.full(scaled.shape[1], REFERENCE))

    def fraction(self, points: np.ndarray) -> float:
        return self.hv(points) / self.true_hv

    def found(self, points: np.ndarray) -> int:
        """How many true-front architectures are among `points`."""
        points = np.asarray(points, dtype=float)
        return sum(bool(np.any(np.all(np.isclose(points, f, rtol=1e-9), axis=1))) for f in self.front)

    def curve(self, points: np.ndarray) -> list[float]:
        """Fraction of the true hypervolume after each evaluation."""
        from search.results.pareto import nondominated_mask

        out, kept = [], np.empty((0, points.shape[1]))
        for point in points:
            kept = np.vstack([kept, point])
            kept = kept[nondominated_mask(kept)]  # dominated points add no volume
            out.append(self.fraction(kept))
        return out


def ask_tell(sampler: str, seed: int, budget: int) -> np.ndarray:
    """One search driven by plain Optuna ask/tell; the evaluated points, in order."""
    import optuna

    from search.driver.samplers import make_sampler
    from search.tasks import tabular_bench
    from search.tasks.plugins import suggest_params

    spec = spec_for(sampler, seed, budget)
    study = optuna.create_study(directions=spec.directions, sampler=make_sampler(spec, seed))
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in spec.directions])
    points = []
    for _ in range(budget):
        trial = study.ask()
        metrics = tabular_bench.lookup(suggest_params(trial, spec, "table"))
        values = [metrics[n] for n in NAMES]
        study.tell(trial, values)
        points.append(np.array(values) * signs)
    return np.array(points)


def through_launch(budget: int, workdir: Path) -> tuple[np.ndarray, float]:
    """The same search through `search.driver.launcher.launch` (Ray Tune, AskTellSearcher)."""
    import optuna

    from search.driver.launcher import launch

    spec = spec_for("tpe", 0, budget, name="efficiency-launch")
    url = f"sqlite:///{workdir / 'launch.db'}"
    summary = launch(spec, storage_url=url)
    if summary.complete != budget:
        raise RuntimeError(f"launch: {summary.complete}/{budget} trials COMPLETE")
    study = optuna.load_study(study_name=spec.name, storage=url)
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in spec.directions])
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    return np.array([np.array(t.values) * signs for t in trials]), summary.wall_seconds


def _reach(curves: list[list[float]]) -> int | None:
    """Evaluations the seed-mean curve needs to reach TARGET, None if it never does."""
    mean = np.mean(np.array(curves), axis=0)
    hits = np.nonzero(mean >= TARGET)[0]
    return int(hits[0]) + 1 if len(hits) else None


def run(quick: bool = False) -> list[Table]:
    size = settings(quick)
    budgets, largest = size["budgets"], max(size["budgets"])
    yardstick = Yardstick()
    rows, seconds = [], {}
    for sampler in size["samplers"]:
        seeds = size["gp_seeds"] if sampler == "gp" else size["seeds"]
        runs_budgets = [min(budgets)] if sampler == "gp" else budgets
        if seeds == 0:
            continue
        row: list = [sampler, "ask/tell", seeds]
        curves, found = [], []
        started = time.perf_counter()
        for budget in budgets:
            if budget not in runs_budgets:
                row += ["not run", "not run"]
                continue
            fractions = []
            for seed in range(seeds):
                points = ask_tell(sampler, seed, budget)
                fractions.append(yardstick.fraction(points))
                if budget == max(runs_budgets):
                    curves.append(yardstick.curve(points))
                    found.append(yardstick.found(points))
            row += [100 * statistics.mean(fractions), 100 * (statistics.stdev(fractions) if seeds > 1 else 0.0)]
        reach = _reach(curves)
        row.append(reach if reach is not None else f"not within {max(runs_budgets)}")
        row.append(statistics.mean(found))
        seconds[sampler] = time.perf_counter() - started
        rows.append(row)
    with ray_session(), tempfile.TemporaryDirectory(prefix="paretune-bench-") as scratch:
        points, wall = through_launch(size["launch"], Path(scratch))
    launched = ["tpe", f"launch (Ray, concurrency 2), {size['launch']} trials", 1]
    for budget in budgets:
        launched += [100 * yardstick.fraction(points[:budget]), 0.0] if budget <= len(points) else ["", ""]
    reach = next((i + 1 for i, f in enumerate(yardstick.curve(points)) if f >= TARGET), None)
    launched.append(reach if reach is not None else f"not within {len(points)}")
    launched.append(yardstick.found(points))
    rows.append(launched)
    columns = ["sampler", "driven by", "seeds"]
    for budget in budgets:
        columns += [f"HV % of true front @{budget}", f"sd @{budget}"]
    columns += [f"evaluations to {TARGET:.0%}", "true-front archs found"]
    return [
        Table(
            "efficiency",
            "Search efficiency on NAS-Bench-201 (CIFAR-10)",
            columns,
            rows,
            [
                f"objectives accuracy (max), latency_ms (min), params (min); true front: {len(yardstick.front)} of "
                f"15,625 architectures, from the whole table.",
                f"hypervolume with moocore on objectives normalised over the whole table (0 best, 1 worst), fixed "
                f"reference point ({REFERENCE}, {REFERENCE}, {REFERENCE}); HV % = mean over seeds of HV(evaluated) / "
                "HV(true front); sd = their standard deviation.",
                "samplers as paretune configures them for the budget (search.driver.samplers.make_sampler); a separate run "
                "per budget, seeds 0..n-1.",
                f"evaluations to {TARGET:.0%}: first evaluation at which the seed-mean curve of the largest-budget "
                f"runs reaches it; true-front archs found: how many of the {len(yardstick.front)} front architectures "
                "those runs evaluated (seed mean).",
                "'ask/tell' rows drive the sampler with plain Optuna ask/tell in one process (fast); the 'launch' row "
                "is one real search through Ray Tune + AskTellSearcher (seed 0) with the same spec, "
                f"{wall:.1f} s wall including Ray start; it is one seed, so its sd is 0 by construction.",
                "GP: about 3 s per trial with three objectives on this machine, so budget "
                f"{min(budgets)} and {size['gp_seeds']} seeds only." if size["gp_seeds"] else
                "GP not run in --quick (about 3 s per trial with three objectives).",
                "sampler time: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()) + ".",
            ],
        )
    ]

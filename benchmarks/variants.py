"""Train once, compress many: how fast variants per training reach the front.

The same spec run with `budget.variants_per_training` = 1 (every trial trains its own
model) and N (one training, N post-training variants: pruning and its fine-tune,
quantization, runtime, each from a copy of the trained weights; search.trial.variants),
through the real launch path (`search.driver.launcher.run_trials`: Ray Tune +
AskTellSearcher, a fresh SQLite study with its baseline queued first), for the same
wall clock, concurrency 2, TPE seeded per run.

Tasks and yardstick as in the early-stopping benchmark (benchmarks/early_stopping.py):
scikit-learn's digits (built-in families) and the own-model glyphs (its small ResNet
on 1,500 16×16 images), one latency constraint each; hypervolume of a run's feasible
COMPLETE trials against the union front of every run of the task, cost objectives as
log10, min-max normalized. Reported per setting: seconds to 90% / 95% of that
reference (median over seeds), HV % at half and all of the budget, trials, trainings,
and front points per training-hour (the run's own front size over its trainings'
hours: trainings × mean train time). Each run prints one `variants raw {json}` line on
stderr; `from_log(path)` rebuilds the tables.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import Table
from benchmarks.early_stopping import (
    REFERENCE,
    Run,
    Yardstick,
    _fmt_time,
    _median_time,
    glyph_folder,
    print_raw,
    read_raw,
    record,
    spec_data,
)


def settings(quick: bool) -> dict:
    if quick:  # the wiring only: small digits models, 7 s per setting
        return {"tasks": {"digits": {"epochs": 6, "seconds": 7, "small": True}}, "seeds": [0], "variants": [1, 4]}
    return {
        "tasks": {"digits": {"epochs": 30, "seconds": 120}, "glyphs": {"epochs": 12, "seconds": 240}},
        "seeds": [0, 1, 2],
        "variants": [1, 4, 8],
    }

@dataclass
class VariantRun(Run):
    variants: int = 1
    trainings: int = 0
    front: int = 0
    train_hours: float = 0.0  # trainings × their mean train time

def run_one(task_name: str, variants: int, seed: int, size: dict, images: Path | None, workdir: Path) -> VariantRun:
    import optuna
    from optuna.trial import TrialState

    from search.core import storage as storages
    from search.core.spec import from_dict
    from search.driver.launcher import open_study, prepare_study, run_trials
    from search.results import pareto
    from search.tasks import baseline
    from search.tasks.data import load_task
    from search.tasks.plugins import resolve
    from search.trial import variants as shared

    data = spec_data(task_name, size, images)
    data["name"] = f"vpt-{task_name}-{variants}-{seed}"
    data["seed"] = seed
    data["budget"]["variants_per_training"] = variants
    data["budget"]["early_stopping"] = "none"  # variants alone; early stopping is --only peers
    spec = from_dict(data)
    plugins = resolve(spec)
    task = load_task(spec, plugins.task)
    storage = storages.open_storage(f"sqlite:///{workdir / (spec.name + '.db')}")
    study, _ = open_study(spec, storage, task.kind, plugins=plugins)
    baseline.enqueue(study, spec, task.kind, plugins)
    shared_results = prepare_study(spec, task, plugins)
    load = round(os.getloadavg()[0], 2)
    started = time.time()
    run_trials(spec, task, study, shared=shared_results, plugins=plugins, time_budget_s=size["seconds"])
    wall = time.time() - started
    study = optuna.load_study(study_name=spec.name, storage=storage)
    objectives = pareto.objectives_of(study)
    run = VariantRun(task_name, f"{variants} per training", seed, load, size["seconds"], wall, objectives.names,
                     objectives.directions, variants=variants)
    record(run, study, started)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    run.trainings = shared.trainings(complete)
    run.front = len(pareto.pareto_front(pareto.feasible_trials(study), objectives))
    holders = {shared.training_of(t): t for t in complete}
    train_s = [float(t.user_attrs.get("timing", {}).get("phases", {}).get("train", 0.0)) for t in holders.values()]
    run.train_hours = sum(train_s) / 3600
    return run

def tables(runs: list[VariantRun]) -> list[Table]:
    out = []
    for task in dict.fromkeys(r.task for r in runs):
        mine = [r for r in runs if r.task == task]
        yard = Yardstick(mine, log_costs=True)
        budget = mine[0].budget_s
        rows, base_90 = [], None
        for setting in sorted({r.variants for r in mine}):
            group = [r for r in mine if r.variants == setting]
            times = {share: [yard.time_to(r, share) for r in group] for share in (0.9, 0.95)}
            median_90 = _median_time(times[0.9], budget)
            if setting == 1:
                base_90 = median_90
            speedup = round(base_90 / median_90, 2) if isinstance(base_90, float) and isinstance(median_90, float) and median_90 > 0 else "n/a"
            rows.append([
                setting, len(group), round(statistics.mean(r.load for r in group), 2),
                median_90, " / ".join(_fmt_time(t, budget) for t in times[0.9]),
                _median_time(times[0.95], budget), " / ".join(_fmt_time(t, budget) for t in times[0.95]),
                speedup,
                round(100 * statistics.mean(yard.share_at(r, budget / 2) for r in group), 1),
                round(100 * statistics.mean(yard.share_at(r, budget) for r in group), 1),
                round(statistics.mean(r.complete for r in group), 1),
                round(statistics.mean(r.trainings for r in group), 1),
                round(statistics.mean(r.front for r in group), 1),
                round(statistics.mean(r.front / r.train_hours if r.train_hours else 0.0 for r in group), 0),
            ])
        out.append(Table(
            name="variants",
            title=f"Variants per training on {task}: wall clock to a share of the reference hypervolume (log10 costs)",
            columns=["variants per training", "seeds", "load avg at start", "s to 90% (median)", "s to 90% per seed",
                     "s to 95% (median)", "s to 95% per seed", "speed-up to 90% vs 1", f"HV % at {budget / 2:g} s",
                     f"HV % at {budget:g} s", "COMPLETE", "trainings", "front points", "front points per training-hour"],
            rows=rows,
            notes=[
                f"each run {budget:g} s of wall clock, concurrency 2, TPE seeded per run, the baseline queued first; "
                f"reference HV {yard.reference:.4f} (union front of all {len(mine)} runs, log10 costs, min-max normalized, "
                f"reference point {REFERENCE} each)",
                "per-run loads: " + ", ".join(f"{r.variants}/s{r.seed} {r.load}" for r in mine),
                "front points per training-hour: the run's front size over trainings × their train time (train phase)",
            ],
        ))
    return out

def run(quick: bool = False) -> list[Table]:
    size = settings(quick)
    runs: list[VariantRun] = []
    with tempfile.TemporaryDirectory(prefix="paretune-vpt-") as scratch:
        workdir = Path(scratch)
        for task, task_size in size["tasks"].items():
            images = glyph_folder(workdir) if task == "glyphs" else None
            for seed in size["seeds"]:
                for variants in size["variants"]:  # interleaved: a busier hour of the machine hits every setting
                    runs.append(run_one(task, variants, seed, task_size, images, workdir))
                    r = runs[-1]
                    print(f"variants: {task} {variants}/training seed {seed}: {r.complete} COMPLETE from {r.trainings} "
                          f"trainings, front {r.front}, load {r.load}", file=sys.stderr, flush=True)
                    print_raw("variants", r)
    return tables(runs)

def from_log(path: Path) -> list[Table]:
    """The tables again from the `variants raw` lines of a benchmark log."""
    return tables(read_raw(path, "variants", VariantRun))

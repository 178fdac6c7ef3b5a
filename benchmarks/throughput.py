"""Throughput: paretune against plain Optuna on the same trials, slots and wall clock.

Two ways to run one spec for the same wall clock, from the command's start (so start-up
counts), each on a fresh SQLite study, 2 trial slots, one CPU each:

- plain Optuna, as Optuna's docs run it in parallel: two worker processes on one
  SQLite study, each `study.optimize(objective)` with TPE (multivariate, constant
  liar: `search.driver.samplers.make_sampler`, a seed per worker), the objective calling
  paretune's own trial pipeline (`search.trial.pipeline.run_pipeline`) and nothing else;
- paretune: `paretune launch SPEC` (Ray Tune, the ask/tell searcher, leases, the
  progress output), stopped by SIGINT to its process group at the end of the budget.
  `--root DIR` runs the paretune of another checkout the same way (before/after).

Tasks: the digits study (studies/digits.toml) and the own-model example
(examples/own_model: its images from make_images.py, its spec as written).

Reported per task and way, over the seeds: COMPLETE trials by the end of the budget and
per minute, HV % at the end (the early-stopping yardstick: union front of every run
of the task, log10 of the cost objectives, min-max normalized, reference point 1.1),
seconds from the command to the first COMPLETE trial, and where a trial's time went
(`search.trial.timing`: sample, queued, dispatch, the pipeline's phases, return, store; a
plain Optuna trial has no queue, dispatch or return). Each run's raw data is printed
as one `throughput raw {json}` line on stderr; `from_log(path)` rebuilds the tables.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.common import Table
from benchmarks.early_stopping import Run, Yardstick

ROOT = Path(__file__).resolve().parents[1]
WAYS = ("plain Optuna", "paretune")
SLOTS = 2
BIG = 100_000  # a trial budget no run reaches: every run ends at its wall clock


def settings(quick: bool) -> dict:
    if quick:  # a smoke run of the wiring
        return {"tasks": {"digits": {"seconds": 20, "small": True}}, "seeds": [0]}
    return {"tasks": {"digits": {"seconds": 120}, "glyphs": {"seconds": 150}}, "seeds": [0, 1, 2]}


def glyph_folder(directory: Path) -> Path:
    folder = directory / "glyphs"
    if not folder.is_dir():
        subprocess.run([sys.executable, str(ROOT / "examples" / "own_model" / "make_images.py"), "--out", str(folder)],
                       check=True, capture_output=True)
    return folder


def spec_file(task: str, seed: int, size: dict, workdir: Path) -> Path:
    """The task's spec with an unreachable budget, written where both ways read it."""
    from search.core.spec import read_toml
    from search.core.toml_text import dumps

    if task == "digits":
        data = read_toml(ROOT / "studies" / "digits.toml")
        if size.get("small"):
            data["space"]["architecture"] = {"families": ["mlp", "mobilenet"], "width": [8, 32], "depth": [1, 2]}
    else:
        example = ROOT / "examples" / "own_model"
        data = read_toml(example / "spec.toml")
        data["task"] = {**data["task"], "images": str(glyph_folder(workdir))}
        data["model"] = {**data["model"], "factory": f"{example / 'model.py'}:build"}
    data["name"] = f"tp-{task}-{seed}"
    data["seed"] = seed
    # One full training per trial, as plain Optuna runs it: variants per training and
    # early stopping have their own benchmarks (--only variants, --only peers).
    data["budget"] = {**data.get("budget", {}), "trials": BIG, "concurrency": SLOTS, "max_failed_trials": BIG,
                      "variants_per_training": 1, "early_stopping": "none"}
    path = workdir / f"{data['name']}.toml"
    path.write_text(dumps(data))
    return path


# --- plain Optuna ------------------------------------------------------------------


def plain_worker(spec_path: str, url: str, deadline: float, worker: int) -> None:
    """One plain Optuna worker process: `study.optimize` until `deadline`."""
    import optuna

    from search.core.spec import load
    from search.driver.launcher import DRIVER_SEED_STRIDE
    from search.driver.samplers import make_sampler
    from search.tasks.data import load_task
    from search.tasks.plugins import resolve, suggest_params
    from search.trial import timing
    from search.trial.pipeline import run_pipeline

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = load(spec_path)
    plugins = resolve(spec)
    task = load_task(spec, plugins.task)
    sampler = make_sampler(spec, spec.seed + DRIVER_SEED_STRIDE * worker)
    study = optuna.load_study(study_name=spec.name, storage=url, sampler=sampler)

    def objective(trial: optuna.Trial) -> list[float]:
        params = suggest_params(trial, spec, task.kind, plugins)
        sampled = time.time()
        with timing.record() as timeline:
            result = run_pipeline(params, task, spec, spec.seed + trial.number, plugins=plugins)
        ended = time.time()
        marks = {"sampled": sampled, "handed": sampled, "worker_start": sampled, "worker_end": ended, "result": ended}
        trial.set_user_attr(timing.ATTR, {"phases": timeline.as_dict(), "marks": marks})
        values = result.metrics.to_result()
        return [values[name] for name in spec.objective_names]

    study.optimize(objective, timeout=max(1.0, deadline - time.time()), catch=(Exception,))


def run_plain(spec_path: Path, url: str, seconds: float) -> float:
    """Two worker processes for `seconds`; returns the start time (epoch seconds)."""
    import optuna

    from search.core.spec import load

    spec = load(spec_path)
    optuna.create_study(study_name=spec.name, storage=url, directions=spec.directions)
    started = time.time()
    deadline = started + seconds
    workers = [
        subprocess.Popen([sys.executable, "-m", "benchmarks.throughput", "worker", str(spec_path), url, str(deadline), str(i)],
                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for i in range(SLOTS)
    ]
    for proc in workers:  # a trial running at the deadline may finish; it is not counted
        try:
            proc.wait(timeout=seconds + 120)
        except subprocess.TimeoutExpired:
            proc.kill()
    return started


# --- paretune ----------------------------------------------------------------------


def run_paretune(spec_path: Path, url: str, seconds: float, root: Path) -> float:
    """`paretune launch` of the checkout at `root` for `seconds`, then Ctrl-C."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    started = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "search", "launch", str(spec_path), "--storage", url],
                            cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return started


# --- one run and the tables -----------------------------------------------------------


@dataclass
class Result:
    """One run: the yardstick's record plus the throughput figures."""

    run: Run
    first_result_s: float | None = None
    duration_s: float = 0.0  # mean, COMPLETE trials counted
    phases: dict = field(default_factory=dict)  # mean seconds per phase (search.trial.timing), where recorded


def measure_run(task: str, way: str, seed: int, size: dict, workdir: Path, root: Path, label: str) -> Result:
    import optuna
    from optuna.trial import TrialState

    from search.core.spec import load as load_spec
    from search.trial import timing

    seconds = size["seconds"]
    spec_path = spec_file(task, seed, size, workdir)
    url = f"sqlite:///{workdir / f'{label}-{task}-{seed}.db'}"
    load = round(os.getloadavg()[0], 2)
    started = run_plain(spec_path, url, seconds) if way == "plain Optuna" else run_paretune(spec_path, url, seconds, root)
    spec = load_spec(spec_path)  # the objectives by name: a plain Optuna study does not record them
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in spec.directions])
    study = optuna.load_study(study_name=spec.name, storage=url)
    trials = study.get_trials(deepcopy=False)
    counted = [t for t in trials if t.state == TrialState.COMPLETE and t.datetime_complete.timestamp() - started <= seconds]
    run = Run(task, label, seed, load, seconds, seconds, spec.objective_names, list(spec.directions))
    run.done = sorted(((t.datetime_complete.timestamp() - started, np.asarray(t.values, dtype=float) * signs)
                       for t in counted), key=lambda item: item[0])
    run.trials = sum(t.state != TrialState.WAITING for t in trials)
    run.complete = len(counted)
    run.failed = sum(t.state == TrialState.FAIL for t in trials)
    result = Result(run)
    if counted:
        result.first_result_s = min(t.datetime_complete.timestamp() for t in counted) - started
        result.duration_s = statistics.mean((t.datetime_complete - t.datetime_start).total_seconds() for t in counted)
        broken = [b for b in (timing.breakdown(t) for t in counted) if b is not None]
        if broken:
            result.phases = {name: statistics.mean(b[name] for b in broken) for name in timing.PHASES}
    return result


def _mean(values) -> float:
    values = [v for v in values if v is not None]
    return round(statistics.mean(values), 3) if values else float("nan")


def tables(results: list[Result]) -> list[Table]:
    from search.trial import timing

    out = []
    for task in dict.fromkeys(r.run.task for r in results):
        mine = [r for r in results if r.run.task == task]
        yard = Yardstick([r.run for r in mine])
        budget = mine[0].run.budget_s
        rows, phase_rows = [], []
        for label in dict.fromkeys(r.run.method for r in mine):
            group = [r for r in mine if r.run.method == label]
            shares = [100 * yard.share_at(r.run, budget) for r in group]
            rows.append([
                label, len(group), _mean(r.run.load for r in group),
                " / ".join(str(r.run.complete) for r in group),
                _mean(r.run.complete * 60 / budget for r in group),
                _mean(shares), round(statistics.stdev(shares), 1) if len(shares) > 1 else 0.0,
                _mean(100 * yard.share_at(r.run, budget / 4) for r in group),
                _mean(r.first_result_s for r in group),
                _mean(r.duration_s for r in group),
            ])
            recorded = [r for r in group if r.phases]
            if recorded:
                phases = [_mean(r.phases[name] for r in recorded) for name in timing.PHASES]
                phase_rows.append([label, *phases, round(sum(phases), 3), _mean(r.duration_s for r in recorded)])
        out.append(Table(
            name="throughput",
            title=f"Throughput on {task}: COMPLETE trials and HV % at equal wall clock ({budget:g} s from the command)",
            columns=["way", "seeds", "load avg at start", "COMPLETE per seed", "trials / min", f"HV % at {budget:g} s",
                     "HV % sd", f"HV % at {budget / 4:g} s", "s to first result", "mean trial s"],
            rows=rows,
            notes=[
                f"{SLOTS} slots, one CPU each; TPE seeded per run; reference HV {yard.reference:.4f} (union front of all "
                f"{len(mine)} runs of {task}; log10 of the cost objectives, min-max normalized, reference point 1.1)",
                "COMPLETE and HV count trials finished within the wall clock; the first result counts start-up "
                "(Ray, preflight, worker start for paretune; imports and data for plain Optuna)",
            ],
        ))
        if phase_rows:
            out.append(Table(
                name="throughput",
                title=f"Where a trial's time goes on {task} (mean seconds per COMPLETE trial, search.trial.timing)",
                columns=["way", *timing.PHASES, "sum", "mean trial s"],
                rows=phase_rows,
                notes=[
                    "sample: ask to params chosen; queued: a trial asked ahead waiting for a slot; dispatch: handed to "
                    "Tune to its function starting on a worker; check..measure: the pipeline's own phases; wait: the "
                    "node's measurement lock; report: per-epoch reports; return: last result to the searcher; store: "
                    "to the storage's tell; other: the worker's remainder",
                    "a trial's duration in the storage is its ask to its tell, so `sum` equals it",
                ],
            ))
    return out


def run(quick: bool = False, roots: dict[str, Path] | None = None) -> list[Table]:
    """`roots`: paretune checkouts to compare by label (default: this one, "paretune")."""
    size = settings(quick)
    roots = roots or {"paretune": ROOT}
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="paretune-tp-") as scratch:
        workdir = Path(scratch)
        for task, task_size in size["tasks"].items():
            for seed in size["seeds"]:
                ways = [("plain Optuna", "plain Optuna", ROOT)] + [("paretune", label, root) for label, root in roots.items()]
                for way, label, root in ways:  # interleaved, so a busier minute of the machine hits every way
                    results.append(measure_run(task, way, seed, task_size, workdir, root, label))
                    print(f"throughput: {task} {label} seed {seed}: {results[-1].run.complete} COMPLETE, "
                          f"first result {results[-1].first_result_s}, load {results[-1].run.load}",
                          file=sys.stderr, flush=True)
                    print("throughput raw " + json.dumps(dataclasses.asdict(results[-1]), default=_plain),
                          file=sys.stderr, flush=True)
    return tables(results)


def _plain(value):
    return value.tolist() if hasattr(value, "tolist") else str(value)


def from_log(path: Path) -> list[Table]:
    """The tables from the raw lines a (possibly interrupted) run printed."""
    results = []
    for line in Path(path).read_text().splitlines():
        if line.startswith("throughput raw "):
            data = json.loads(line[len("throughput raw "):])
            run_data = data.pop("run")
            run_data["done"] = [(at, np.asarray(values, dtype=float)) for at, values in run_data["done"]]
            results.append(Result(Run(**run_data), **data))
    return tables(results)


def main(argv: list[str]) -> None:
    """`worker SPEC URL DEADLINE ID`: a plain Optuna worker; `compare LABEL=DIR ... [--quick]`:
    the tables with these paretune checkouts side by side."""
    if argv[0] == "worker":
        plain_worker(argv[1], argv[2], float(argv[3]), int(argv[4]))
        return
    if argv[0] == "compare":
        from benchmarks.common import to_markdown

        roots = {label: Path(path).resolve() for label, _, path in (a.partition("=") for a in argv[1:] if "=" in a)}
        for table in run(quick="--quick" in argv, roots=roots):
            print(to_markdown(table), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

"""`paretune`: launch multi-objective searches and inspect what they found.

Each command parses its arguments, calls the library and prints; bad input is one
line on stderr and exit code 2.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from search.core.errors import UsageError
from search.driver import raynoise, stop_signals
from search.driver.cluster import local_only

app = typer.Typer(
    help="Multi-objective AutoML search for efficient models (accuracy, latency, energy) on Ray Tune + Optuna.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

WITHIN_HELP = (
    "The knee is taken among front trials whose accuracy is within this of the most accurate front trial "
    "(a fraction: 0.05 = 5 percentage points; 1 = every front trial), so it is never a near-chance model."
)
MAX_DROP_HELP = (
    "The knee is taken among front trials whose accuracy is within this of the study's baseline (a fraction: "
    "0.01 = 1 percentage point, INC's and NNCF's default criterion); where none is, --accuracy-within's rule, and the output says so."
)
MLFLOW_HELP = ("MLflow tracking URI (http://HOST:5000, sqlite:///mlflow.db, a directory): a run for the study, "
               "one nested run per trial; overrides [tracking] mlflow. Needs pip install -e \".[mlflow]\".")
STORAGE_HELP = "Optuna storage URL: sqlite:///file.db, postgresql://..., journal:///file.log (default: $PARETUNE_STORAGE or sqlite:///paretune.db)."


def _model_words(params: dict, spec, task_kind: str) -> str:
    """A trial's model in a few words, one per dimension (`cnn/structured 0.42/static`)."""
    from search.tasks.plugins import describe_params  # deferred: the spec model and every dimension (pydantic, 0.2 s)

    return describe_params(params, spec, task_kind)


def _study_words(study, params: dict) -> str:
    """`_model_words` for a trial of a stored study."""
    from search.results.recorded import recorded_spec, task_kind_of  # deferred: imports optuna

    try:
        return _model_words(params, recorded_spec(study), task_kind_of(study))
    except UsageError:
        return " ".join(f"{k}={v}" for k, v in params.items())


def _with_baseline(spec, path: Path):
    """The spec with `--baseline FILE`'s params as its [baseline] params."""
    from search.core.spec import Baseline, read_toml  # deferred: the spec model and every dimension (pydantic, 0.2 s)

    data = read_toml(path)
    params = data.get("params", data)
    if not isinstance(params, dict) or any(isinstance(v, dict) for v in params.values()):
        raise UsageError(f"{path}: expected a `params` table (or top-level keys) of param values for --baseline")
    return spec.model_copy(update={"baseline": Baseline(enabled=True, params=params)})


def _load_spec(path: Path, trials: int | None, concurrency: int | None):
    """The spec with the command line's budget overrides applied."""
    from search.core.spec import load  # deferred: the spec model and every dimension (pydantic, 0.2 s)

    spec = load(path)
    budget = spec.budget.model_copy(
        update={k: v for k, v in {"trials": trials, "concurrency": concurrency}.items() if v is not None}
    )
    return spec.model_copy(update={"budget": budget})


def _study_name(spec, name: str | None, own_seed, spec_path: Path):
    """The study this launch searches: --name, else for an exported config a new one
    (its own name would resume the study it was exported from), else the spec's."""
    from search.core.spec import from_dict, to_toml_dict  # deferred: the spec model and every dimension (pydantic, 0.2 s)
    from search.driver import warmstart  # deferred: imports optuna

    if name is not None:
        return from_dict({**to_toml_dict(spec), "name": name}, source="--name")
    if own_seed is None:
        return spec
    renamed = spec.model_copy(update={"name": warmstart.warm_study_name(spec.name, own_seed)})
    console.print(
        f"{escape(str(spec_path))} is an exported config{escape(_origin(own_seed))}: searching a new study [bold]{renamed.name}[/] "
        "with its params as the first trial (a warm start; --name NAME to choose the study)",
        highlight=False,
        soft_wrap=True,
    )
    return renamed


def _origin(seed) -> str:
    return f" (trial {seed.origin_trial} of study {seed.origin_study!r})" if seed.origin_trial is not None else ""


@app.command()
def launch(
    spec_path: Path = typer.Argument(..., metavar="SPEC", help="Study spec (TOML), e.g. studies/digits.toml."),
    trials: Optional[int] = typer.Option(None, "--trials", min=1, help="Override budget.trials (COMPLETE trials wanted)."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", min=1, help="Override budget.concurrency."),
    storage: Optional[str] = typer.Option(None, "--storage", help=STORAGE_HELP),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster: auto, HOST:PORT or ray://HOST:10001 (default: a local Ray)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an existing study (also automatic when it exists)."),
    drop_unsupported: bool = typer.Option(
        False, "--drop-unsupported",
        help="Search without the choices the preflight finds unsupported by the model (default: refuse to start).",
    ),
    name: Optional[str] = typer.Option(
        None, "--name", help="Study name (default: the spec's `name`; for an exported config, NAME-warm-tTRIAL)."
    ),
    enqueue: Optional[list[Path]] = typer.Option(
        None, "--enqueue", metavar="FILE",
        help="Run the params table of this exported config first (repeatable): a warm start from known configs.",
    ),
    progress_every: float = typer.Option(
        30.0, "--progress-every", min=1.0, metavar="SECONDS",
        help="Seconds between status lines when the output is not a terminal (CI, Ray Job logs).",
    ),
    baseline_file: Optional[Path] = typer.Option(
        None, "--baseline", metavar="FILE",
        help="A TOML file whose `params` table (or top-level keys) fixes the baseline's params, as [baseline] params "
        "would: the model as you run it today, trained (or loaded) and measured first.",
    ),
    mlflow: Optional[str] = typer.Option(None, "--mlflow", metavar="URI", help=MLFLOW_HELP),
) -> None:
    """Run (or resume) a search until the spec's budget of COMPLETE trials is in the storage.

    Before Ray starts, a preflight builds the model and dry-runs every enabled prune
    kind, quantization mode and runtime on it; a choice that cannot work stops the
    launch (exit 2) unless --drop-unsupported."""
    if not address:
        local_only()  # before Ray is imported: a local Ray binds 127.0.0.1 only
    from search.driver import launcher, warmstart  # deferred: imports torch, ray, optuna
    from search.driver.launch_report import LaunchReport  # deferred: imports torch, ray, optuna

    spec = _load_spec(spec_path, trials, concurrency)
    own_seed = warmstart.read(spec_path, only_if_new=True)
    seeds = ([own_seed] if own_seed else []) + [warmstart.read(path, required=True) for path in enqueue or []]
    spec = _study_name(spec, name, own_seed, spec_path)
    if baseline_file is not None:
        spec = _with_baseline(spec, baseline_file)
    if mlflow:
        spec = spec.model_copy(update={"tracking": spec.tracking.model_copy(update={"mlflow": mlflow})})
    report = LaunchReport(
        spec, console, err_console, storage=storage, every_s=progress_every, resume=resume, spec_path=spec_path,
        renamed=bool(name or own_seed), own_seed=own_seed,
    )
    with raynoise.quiet(on_stop=report.on_stop), report:
        summary = launcher.launch(
            spec, storage_url=storage, address=address, enqueue=seeds, drop_unsupported=drop_unsupported, **report.callbacks()
        )
    code = report.end(summary)  # what this run stored, the front, what to do next
    if code:
        raise typer.Exit(code)


JOB_ADDRESS_HELP = "The Ray head's dashboard URL, http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS)."


@app.command()
def submit(
    spec_path: Path = typer.Argument(..., metavar="SPEC", help="Study spec (TOML), e.g. studies/digits.toml."),
    address: str = typer.Option(..., "--address", envvar="RAY_API_SERVER_ADDRESS", help=JOB_ADDRESS_HELP),
    storage: Optional[str] = typer.Option(
        None, "--storage", envvar="PARETUNE_STORAGE",
        help="Storage URL the head can reach: postgresql://..., or sqlite:////abs/path.db / journal:///abs/path.log on a shared filesystem.",
    ),
    trials: Optional[int] = typer.Option(None, "--trials", min=1, help="Override budget.trials."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", min=1, help="Override budget.concurrency."),
    wait: bool = typer.Option(False, "--wait/--no-wait", help="Follow the job's log until it ends; exit 0 only if it succeeded."),
) -> None:
    """Run the search as a Ray Job on the cluster's head node; prints the job id."""
    from search.core.storage import redact  # deferred: imports optuna
    from search.driver import jobs  # deferred: the spec model and every dimension (pydantic, 0.2 s)

    spec = _load_spec(spec_path, trials, concurrency)
    job_id = jobs.submit(spec, address, storage)
    print(job_id)  # plain stdout: scripts capture it
    err_console.print(
        f"submitted study {spec.name} as Ray job {job_id}; follow with: paretune status {spec.name} --address {address}"
        f" --storage {redact(storage)}  (or: ray job logs {job_id} --address {address} --follow)",
        highlight=False,
        soft_wrap=True,
    )
    if not wait:
        return
    final = jobs.wait(address, job_id, lambda text: console.print(text, highlight=False, markup=False, soft_wrap=True))
    if final != "SUCCEEDED":
        err_console.print(f"job {job_id} {final}: {jobs.job_message(address, job_id)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    err_console.print(f"job {job_id} SUCCEEDED", highlight=False)


def _print_jobs(address: str, name: str) -> None:
    from search.driver import jobs  # deferred: the spec model and every dimension (pydantic, 0.2 s)

    rows = jobs.jobs_for(address, name)
    if not rows:
        console.print(f"no Ray job for study {name} at {address}", highlight=False)
        return
    stamp = lambda t: dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if t else "-"  # noqa: E731
    for row in rows:  # one line each: job ids stay whole (and greppable) at any width
        console.print(
            f"ray job {row.job_id} {row.status} started {stamp(row.start_time)} ended {stamp(row.end_time)}"
            + (f": {row.message}" if row.message else ""),
            highlight=False,
            soft_wrap=True,
        )


@app.command()
def status(
    name: str = typer.Argument(..., help="Study name (the spec's `name`)."),
    storage: Optional[str] = typer.Option(None, "--storage", help=STORAGE_HELP),
    address: Optional[str] = typer.Option(
        None, "--address", help="Also list the Ray jobs of this study (paretune submit) at this dashboard URL, http://HEAD:8265."
    ),
) -> None:
    """Trial counts by state and the best value of each objective so far (and, with --address, the study's Ray jobs)."""
    from search.core.storage import load_study  # deferred: imports optuna

    if address:
        _print_jobs(address, name)
        try:
            study = load_study(storage, name)
        except UsageError as exc:  # a job still starting has not created its study yet
            console.print(f"no trials yet: {exc}", highlight=False, soft_wrap=True)
            return
    else:
        study = load_study(storage, name)
    from search.driver import pruned  # deferred: imports optuna
    from search.results import pareto as fronts  # deferred: imports optuna

    report = fronts.report(study)
    counts = Counter(t.state.name for t in report.trials)
    stages = pruned.describe(pruned.counts(report.trials))
    console.print(
        f"study [bold]{name}[/]: {len(report.trials)} trials  " + "  ".join(f"{k}={v}" for k, v in sorted(counts.items()))
        + (f" ({stages})" if stages else ""),
        highlight=False,
    )
    if not report.feasible:
        if counts["COMPLETE"]:
            console.print("no feasible COMPLETE trial yet (every COMPLETE trial violates a constraint)", highlight=False)
        return
    objectives = report.objectives
    table = Table("objective", "direction", "best", "trial")
    # Ties on an objective go to a trial no other tied one dominates (then the lowest number).
    for i, best in enumerate(fronts.best_per_objective(report.feasible, objectives)):
        table.add_row(objectives.names[i], objectives.directions[i], f"{best.values[i]:.4g}", str(best.number))
    console.print(table)
    console.print(
        f"Pareto front: {len(report.front)} of {len(report.feasible)} feasible trials (paretune front {name}{_storage_flag(storage)})",
        highlight=False,
        soft_wrap=True,
    )


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{max(seconds, 0):.0f}s ago"


@app.command()
def studies(storage: Optional[str] = typer.Option(None, "--storage", help=STORAGE_HELP)) -> None:
    """Every study in the storage: objectives, trials by state, live drivers (host, pid, heartbeat age), last activity."""
    from search.core.storage import open_storage, redact, resolve_url  # deferred: imports optuna
    from search.driver import studies as overview  # deferred: imports optuna

    now = time.time()
    rows = overview.overview(open_storage(storage), now)
    console.print(f"{redact(resolve_url(storage))}: {len(rows)} stud{'y' if len(rows) == 1 else 'ies'}", highlight=False, soft_wrap=True)
    for row in rows:  # a block of short lines per study: readable at any terminal width
        states = [f"{row.counts[s]} {s}" for s in overview.STATES if row.counts.get(s)]
        drivers = [f"{d.host} pid {d.pid} (heartbeat {_ago(d.age(now))})" for d in row.drivers]
        last = (f"{row.last_activity:%Y-%m-%d %H:%M:%S} ({_ago(now - row.last_activity.timestamp())})"
                if row.last_activity else "-")
        lines = [
            f"[bold]{escape(row.name)}[/]  " + ", ".join(f"{escape(name)} {direction[:3]}" for name, direction in row.objectives),
            f"  trials   {row.trials}" + (": " + ", ".join(states) if states else ""),
            f"  drivers  {len(drivers)} live" + (": " + ", ".join(escape(d) for d in drivers) if drivers else ""),
            f"  last     {last}",
        ]
        for line in lines:
            console.print(line, highlight=False, soft_wrap=True)


def _storage_flag(storage: Optional[str]) -> str:
    from search.core.storage import storage_flag  # deferred: imports optuna

    return storage_flag(storage)


@app.command()
def front(
    name: str = typer.Argument(..., help="Study name (the spec's `name`)."),
    storage: Optional[str] = typer.Option(None, "--storage", help=STORAGE_HELP),
    as_json: bool = typer.Option(
        False, "--json",
        help="Print the front as JSON: {study, objectives, directions, hypervolume, reference_point, knee, trials: "
        "[{number, values, params, user_attrs}]}.",
    ),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Also write plots: FILE.html (plotly) or FILE.png/.svg/.pdf (matplotlib)."),
    reference: Optional[str] = typer.Option(
        None,
        "--reference",
        help="Hypervolume reference point, e.g. 'accuracy=0,latency_ms=5,energy_mj=20'. Objectives left out: "
        "their worst feasible value widened by 10% of their range.",
    ),
    accuracy_within: float = typer.Option(0.05, "--accuracy-within", metavar="FRACTION", help=WITHIN_HELP),
    max_drop: float = typer.Option(0.01, "--max-drop", metavar="FRACTION", help=MAX_DROP_HELP),
) -> None:
    """The Pareto front (feasible COMPLETE trials only), its knee and hypervolume, the baseline, and plots."""
    from search.core.storage import load_study  # deferred: imports optuna
    from search.results import pareto as fronts  # deferred: imports optuna
    from search.results.front_table import export_hint, print_front, print_hypervolume  # deferred: imports optuna
    from search.tasks.baseline import check_max_drop  # deferred: imports optuna

    if plot is not None:
        from search.results.plots import check_path  # deferred: imports optuna

        check_path(plot)
    given = fronts.parse_assignments(reference, "--reference") if reference is not None else None
    fronts.check_within(accuracy_within)
    check_max_drop(max_drop)
    study = load_study(storage, name)
    report = fronts.report(study, given, accuracy_within, max_drop)
    objectives = report.objectives
    if as_json:
        sys.stdout.write(json.dumps(report.to_json(name), indent=2) + "\n")
    else:
        from search.driver import pruned  # deferred: imports optuna

        excluded = report.excluded()
        stages = pruned.describe(pruned.counts(report.trials))
        console.print(
            f"study [bold]{name}[/] ({', '.join(f'{n} {d[:3]}' for n, d in zip(objectives.names, objectives.directions))}): "
            f"{len(report.front)} on the Pareto front of {len(report.feasible)} feasible trials "
            f"({len(report.trials)} in all"
            + "".join(f", {v} {k}" + (f" ({stages})" if k == "PRUNED" and stages else "") for k, v in sorted(excluded.items()))
            + ")",
            highlight=False,
            soft_wrap=True,
        )
        print_front(console, report)
        print_hypervolume(console, report, given)
        if report.knee is not None:
            console.print(f"next: {export_hint(name, _storage_flag(storage))}", highlight=False, soft_wrap=True)
    if plot is not None:
        from search.results.plots import plot as draw  # deferred: imports optuna

        draw(report, plot, title=f"study {name}: {len(report.front)} on the front of {len(report.feasible)} feasible trials, "
             f"hypervolume {report.hypervolume:.4g}")
        (err_console if as_json else console).print(f"plot written to {plot}", highlight=False, soft_wrap=True)


@app.command()
def export(
    name: str = typer.Argument(..., help="Study name (the spec's `name`)."),
    out: Optional[Path] = typer.Option(None, "--out", help="The fixed config to write (TOML; default: NAME-best.toml)."),
    storage: Optional[str] = typer.Option(None, "--storage", help=STORAGE_HELP),
    pick: str = typer.Option(
        "knee", "--pick",
        help="knee (nearest the ideal point, objectives normalized over the front), max:OBJECTIVE, min:OBJECTIVE, "
        "or weights:accuracy=1,latency_ms=0.5 (weighted sum of normalized objectives).",
    ),
    where: Optional[list[str]] = typer.Option(
        None, "--where", help="Filter, repeatable: 'latency_ms<=1.5', 'accuracy>=0.95', 'family==mlp' (objective, user attr or param)."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite --out even if it holds another study's or trial's config."),
    accuracy_within: float = typer.Option(0.05, "--accuracy-within", metavar="FRACTION", help=WITHIN_HELP),
    max_drop: float = typer.Option(0.01, "--max-drop", metavar="FRACTION", help=MAX_DROP_HELP),
    mlflow: Optional[str] = typer.Option(
        None, "--mlflow", metavar="URI", help="Log the config to the trial's MLflow run here (default: where the study was tracked)."),
) -> None:
    """Write one trial of the front as a fixed config: the spec, its pinned params table, and what it measured."""
    from search.core.storage import load_study, resolve_url  # deferred: imports optuna
    from search.results import exporter  # deferred: imports optuna
    from search.results import pareto as fronts  # deferred: imports optuna
    from search.tasks.baseline import check_max_drop  # deferred: imports optuna
    from search.tasks.baseline import find as find_baseline  # deferred: imports optuna

    out = out if out is not None else Path(f"{name}-best.toml")
    rule = fronts.Pick.parse(pick)
    filters = [fronts.Filter.parse(w) for w in where or []]
    fronts.check_within(accuracy_within)
    check_max_drop(max_drop)
    if out.parent != Path("") and not out.parent.is_dir():
        raise UsageError(f"--out {out}: directory {out.parent} does not exist")
    if out.is_dir():
        raise UsageError(f"--out {out}: is a directory; name the file to write, e.g. {out / (name + '-best.toml')}")
    study = load_study(storage, name)
    choice = fronts.pick_choice(study, rule, filters, accuracy_within, max_drop)
    chosen = choice.trial
    how = fronts.pick_words(rule, accuracy_within, choice)
    if choice.fallback:
        console.print(f"{choice.fallback}: the knee is taken {choice.rule} instead", highlight=False, soft_wrap=True)
    exporter.export(
        study, chosen, resolve_url(storage), out, pick=how + "".join(f" where {f}" for f in filters), force=force
    )
    objectives = fronts.objectives_of(study)
    console.print(
        f"exported trial {chosen.number} ({how}"
        + (f", where {' and '.join(map(str, filters))}" if filters else "")
        + f") to {out}: "
        + " ".join(f"{n}={v:.4g}" for n, v in zip(objectives.names, chosen.values))
        + f"  {_study_words(study, chosen.params)}",
        highlight=False,
        soft_wrap=True,
    )
    trade = fronts.trade_words(fronts.study_front(study), chosen, objectives, find_baseline(study.get_trials(deepcopy=False)))
    if trade:
        console.print(f"trade: {trade}", highlight=False, soft_wrap=True)
    _share(study, chosen.number, [out], resolve_url(storage), mlflow, "export", storage_flag=_storage_flag(storage))
    console.print(f"next: paretune train {out} --out {out.with_name(out.stem + '_model')}/", highlight=False, soft_wrap=True)


def _share(study, number: int, files: list[Path], storage_url: str, mlflow: Optional[str], what: str, *,
           storage_flag: str = "", register: dict | None = None) -> None:
    """Attach `files` to trial `number` for optuna-dashboard, refresh the study's note, and
    log them to the trial's MLflow run (`--mlflow`, else where the study was tracked);
    `register`: {"name", "tags"} of a Model Registry version. A tracking server that is
    down is a warning: the files are written either way."""
    from search.results import dashboard, tracking  # deferred: imports optuna
    from search.results.recorded import recorded_spec  # deferred: imports optuna

    where = dashboard.attach(study, number, files, storage_url)
    dashboard.write_note(study, storage_flag)
    console.print(f"optuna-dashboard: {where} (paretune dashboard {study.study_name}{storage_flag})",
                  highlight=False, soft_wrap=True)
    uri = mlflow or study.user_attrs.get(tracking.MLFLOW_ATTR)
    if not uri:
        return
    tracking.check_installed()
    try:
        experiment = recorded_spec(study).tracking.experiment
    except UsageError:
        experiment = None
    try:
        if register is None:
            run_id = tracking.log_export(uri, study, number, files[0], experiment)
            console.print(f"MLflow: {files[0].name} logged to trial {number}'s run {run_id} at {uri}", highlight=False, soft_wrap=True)
        else:
            run_id, version = tracking.log_trained(uri, study, number, files, model_name=register["name"],
                                                   tags=register["tags"], experiment=experiment)
            console.print(f"MLflow: the model is in trial {number}'s run {run_id}, registered as "
                          f"{register['name']!r} version {version} at {uri}", highlight=False, soft_wrap=True)
    except Exception as exc:  # noqa: BLE001 - the files are written; tracking never fails the command
        console.print(f"[yellow]MLflow at {escape(uri)} unreachable ({escape(tracking.cause(exc))}):[/] the {what} is not logged there; "
                      f"run the command again when it is back", highlight=False, soft_wrap=True)


@app.command()
def train(
    config_path: Path = typer.Argument(..., metavar="CONFIG", help="A config written by `paretune export` (spec + pinned params table)."),
    out: Path = typer.Option(..., "--out", help="Directory for the model, its state dict and its model card."),
    storage: Optional[str] = typer.Option(
        None, "--storage", help="The study's storage, to attach what ships to its trial (default: the config's [exported] storage)."),
    mlflow: Optional[str] = typer.Option(
        None, "--mlflow", metavar="URI",
        help="Log what ships to the trial's MLflow run and register the model (default: the config's [tracking] mlflow)."),
) -> None:
    """Retrain an exported config from scratch (recorded seed), measure it on the test split, save the model and a card."""

    from search.results import retrain as retrainer  # deferred: imports torch

    def on_start(loaded, config, task) -> None:
        exported = loaded.exported
        origin = f"trial {exported['trial']} of study {exported.get('study')!r}" if "trial" in exported else str(loaded.path)
        if loaded.spec.weights is not None:  # no training from scratch: the weights, then the trial's own steps
            how = f"from the weights {loaded.spec.weights} (seed {loaded.seed}, fine-tunes up to {loaded.spec.budget.epochs} epochs)"
        else:
            how = f"from scratch (seed {loaded.seed}, {loaded.spec.budget.epochs} epochs)"
            training = exported.get("training_trial")
            if training is not None and training != exported.get("trial"):
                how += f", the training of trial {training} then this variant's own steps"
        console.print(
            f"retraining {origin} {how}: {_model_words(config, loaded.spec, task.kind)}",
            highlight=False,
            soft_wrap=True,
        )

    report = retrainer.retrain(config_path, out, on_start=on_start)
    card = report.card
    table = Table("objective", "search (val)", "retrained (test)", "Δ")
    for row in card["objectives"] + [r for r in card["metrics"] if r["name"] in ("size_kb", "latency_p90_ms", "macs")]:
        table.add_row(
            row["name"], retrainer._fmt(row["search_val"]), retrainer._fmt(row["retrained_test"]),
            retrainer._fmt(row.get("delta"), signed=True),
        )
    console.print(table)
    usage = retrainer.loader_of(report.artifact_format)
    if usage is not None:
        description, load_with, _ = usage
        console.print(
            f"model: {out / card['artifact']['file']} ({description}; test accuracy "
            f"{card['artifact']['test_accuracy']:.4f}; load with {load_with})",
            highlight=False,
            soft_wrap=True,
        )
    else:
        console.print(
            f"[yellow]no {retrainer.TRACED_NAME} model:[/] {escape(str(report.artifact_note))}; saved the state dict only: "
            f"{out / retrainer.STATE_DICT_FILE}",
            highlight=False,
            soft_wrap=True,
        )
    shipped = card.get("latency") or {}
    if shipped.get("artifact"):
        art, search = shipped["artifact"], shipped["search"]
        where = retrainer.ran_on()
        during = (f"; during the search {retrainer._fmt(search['latency_ms'])} ms on {search[where]}"
                  if search.get("latency_ms") is not None else "")
        console.print(f"latency of {art['file']} as shipped ({art[where]}): {art['latency_ms']:.4g} ms{during}",
                      highlight=False, soft_wrap=True)
    console.print(f"model card: {out / retrainer.CARD_MD} and {out / retrainer.CARD_JSON}", highlight=False, soft_wrap=True)
    _share_trained(report, config_path, storage, mlflow)


def _share_trained(report, config_path: Path, storage: Optional[str], mlflow: Optional[str]) -> None:
    """What `train` ships, attached to its trial and (with tracking) registered in MLflow."""
    from search.core.storage import load_study, resolve_url  # deferred: imports optuna
    from search.results.retrain import load_config  # deferred: imports torch

    loaded = load_config(config_path)
    exported = loaded.exported
    url = storage or exported.get("storage")
    if "trial" not in exported or not url:
        return  # a config not exported from a study: nothing to attach it to
    if "***" in url:
        console.print("not attached to the study's trial: its storage URL has a password; give it with --storage",
                      highlight=False, soft_wrap=True)
        return
    try:
        study = load_study(url, exported["study"])
    except UsageError as exc:
        console.print(f"[yellow]not attached to the study's trial:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return
    tracking = loaded.spec.tracking
    test_accuracy = report.card["artifact"].get("test_accuracy")
    tags = {**{k: str(v) for k, v in (exported.get("values") or {}).items()},
            **({"test_accuracy": str(test_accuracy)} if test_accuracy is not None else {})}
    register = {"name": tracking.registered_model or exported["study"], "tags": tags}
    _share(study, int(exported["trial"]), list(report.files), url, mlflow or tracking.mlflow, "model",
           storage_flag=_storage_flag(url if url != resolve_url(None) else None), register=register)


@app.command()
def dashboard(
    name: str = typer.Argument(..., help="Study name (the spec's `name`)."),
    storage: Optional[str] = typer.Option(None, "--storage", help=STORAGE_HELP),
    port: int = typer.Option(8080, "--port", min=1, max=65535, help="Port on 127.0.0.1."),
) -> None:
    """Serve optuna-dashboard for the storage on 127.0.0.1 (local only; use an SSH tunnel from elsewhere)."""
    from search.core.storage import load_study  # deferred: imports optuna

    study = load_study(storage, name)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise UsageError(f"--port {port}: cannot listen on 127.0.0.1:{port} ({exc.strerror or exc})") from None
    import optuna_dashboard  # deferred: imports optuna, pandas, sklearn

    from search.core import optuna_internals  # deferred: imports optuna
    from search.core.storage import resolve_url  # deferred: imports optuna
    from search.results.dashboard import artifact_store  # deferred: imports optuna

    store = artifact_store(resolve_url(storage))  # exported configs and trained models, attached to their trials
    study_id = optuna_internals.study_id(study)
    console.print(f"optuna-dashboard: http://127.0.0.1:{port}/dashboard/studies/{study_id} (Ctrl-C to stop)", highlight=False, soft_wrap=True)
    try:
        optuna_dashboard.run_server(optuna_internals.storage_of(study), host="127.0.0.1", port=port, artifact_store=store)
    except KeyboardInterrupt:
        console.print("dashboard stopped", highlight=False)


@app.command()
def track(
    name: str = typer.Argument(..., help="Study name (the spec's `name`)."),
    storage: Optional[str] = typer.Option(None, "--storage", help=STORAGE_HELP),
    mlflow: Optional[str] = typer.Option(None, "--mlflow", metavar="URI", help="MLflow tracking URI (default: where the study was tracked)."),
) -> None:
    """Log a study's finished trials MLflow does not have yet, and its front, to MLflow (a catch-up after an outage)."""
    from search.core.storage import load_study  # deferred: imports optuna
    from search.results import tracking  # deferred: imports optuna
    from search.results.recorded import recorded_spec  # deferred: imports optuna

    study = load_study(storage, name)
    uri = mlflow or study.user_attrs.get(tracking.MLFLOW_ATTR)
    if not uri:
        raise UsageError(f"study {name!r} was never tracked: give --mlflow URI")
    tracking.check_installed()
    tracking.client_settings()
    try:
        experiment = recorded_spec(study).tracking.experiment
    except UsageError:
        experiment = None
    mirror = tracking.Mirror(uri, study, experiment)
    try:
        added = mirror.sync()
        mirror.log_summary()
    except Exception as exc:  # noqa: BLE001 - one line, not MLflow's traceback
        err_console.print(f"error: MLflow at {uri} unreachable ({tracking.cause(exc)}); nothing lost: run it again when it is back",
                          highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if mlflow and study.user_attrs.get(tracking.MLFLOW_ATTR) != mlflow:
        study.set_user_attr(tracking.MLFLOW_ATTR, mlflow)
    console.print(f"MLflow: {added} trial run(s) logged now, {len(mirror.trial_runs())} in all; the study's front "
                  f"updated (experiment {mirror.experiment_name!r} at {uri})", highlight=False, soft_wrap=True)


@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="Smoke run: small sizes, a few minutes on 2 cores."),
    only: Optional[list[str]] = typer.Option(
        None, "--only", help="Run only this benchmark (repeatable): overhead, efficiency, early_stopping, variants, peers, throughput, stability, compression, streaming."
    ),
    out: Path = typer.Option(Path("bench-results"), "--out", help="Directory for results.md and results.json."),
) -> None:
    """Run the benchmarks (the same as `python -m benchmarks`): print their tables, write them to --out."""
    # benchmarks/ sits beside the packages in a source checkout and is not installed.
    root = Path(__file__).resolve().parents[1]
    if not (root / "benchmarks" / "run.py").is_file():
        raise UsageError(f"bench: no benchmarks/ in {root}; run it from a source checkout")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from benchmarks import run as runner  # local: benchmarks/ is importable once on sys.path (above)

    argv = (["--quick"] if quick else []) + [a for name in only or [] for a in ("--only", name)] + ["--out", str(out)]
    code = runner.main(argv)
    if code:
        raise typer.Exit(code)


class _PlainLines(logging.Handler):
    """paretune's own log records (e.g. a storage retry, search.driver.tell) as plain lines on
    stderr, not in the `WARNING:search.driver.tell:` form a logging setup elsewhere gives them."""

    def emit(self, record: logging.LogRecord) -> None:
        err_console.print(record.getMessage(), highlight=False, markup=False, soft_wrap=True)


def main() -> None:
    package = logging.getLogger("search")
    package.addHandler(_PlainLines(logging.WARNING))
    package.propagate = False
    try:
        with stop_signals.caught():  # SIGTERM and SIGHUP stop any command as Ctrl-C does
            app()
    except UsageError as exc:
        # markup=False: a "[section]" in a message is text, not Rich markup.
        err_console.print(f"error: {exc}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:  # Ctrl-C (or SIGTERM, SIGHUP: search.driver.stop_signals) before or after the trials ran
        err_console.print("interrupted", highlight=False)
        sys.exit(stop_signals.exit_code())


if __name__ == "__main__":
    main()

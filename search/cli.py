"""`paretune`: launch multi-objective searches and inspect what they found.

Each command parses its arguments, calls the library and prints; bad input is one
line on stderr and exit code 2.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from search.errors import UsageError

app = typer.Typer(
    help="Multi-objective AutoML search for efficient models (accuracy, latency, energy) on Ray Tune + Optuna.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

STORAGE_HELP = "Optuna storage URL: sqlite:///file.db, postgresql://..., journal:///file.log (default: $PARETUNE_STORAGE or sqlite:///paretune.db)."


def _progress_printer(budget: int):
    """One line per finished trial: readable in a terminal and in CI logs alike."""
    from optuna.trial import TrialState

    counts = Counter()

    def on_told(trial) -> None:
        counts[trial.state.name] += 1
        if trial.state == TrialState.COMPLETE:
            attrs = trial.user_attrs
            console.print(
                f"[green]trial {trial.number:>4} COMPLETE[/] "
                f"acc={attrs.get('accuracy', float('nan')):.4f} "
                f"latency={attrs.get('latency_ms', float('nan')):.3f}ms "
                f"energy={attrs.get('energy_mj', float('nan')):.4f}mJ({attrs.get('energy_source', '?')}) "
                f"{trial.params.get('family', '')}/{trial.params.get('prune_kind', '')}/"
                f"{trial.params.get('quant_mode', trial.params.get('quant_mode_transformer', ''))}  "
                f"[{counts['COMPLETE']} done this run, budget {budget}]",
                highlight=False,
                soft_wrap=True,
            )
        else:
            console.print(f"[red]trial {trial.number:>4} FAIL[/] {trial.user_attrs.get('fail_reason', '')}", highlight=False)

    return on_told


@app.command()
def launch(
    spec_path: Path = typer.Argument(..., metavar="SPEC", help="Study spec (TOML), e.g. studies/digits.toml."),
    trials: Optional[int] = typer.Option(None, "--trials", min=1, help="Override budget.trials (COMPLETE trials wanted)."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", min=1, help="Override budget.concurrency."),
    storage: Optional[str] = typer.Option(None, "--storage", help=STORAGE_HELP),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster: auto, HOST:PORT or ray://HOST:10001 (default: a local Ray)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an existing study (also automatic when it exists)."),
) -> None:
    """Run (or resume) a search until the spec's budget of COMPLETE trials is in the storage."""
    from search import launch as launcher
    from search.spec import load

    spec = load(spec_path)
    budget = spec.budget.model_copy(
        update={k: v for k, v in {"trials": trials, "concurrency": concurrency}.items() if v is not None}
    )
    spec = spec.model_copy(update={"budget": budget})

    def on_start(study, reconciled: int) -> None:
        from optuna.trial import TrialState

        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        verb = "resuming" if done or reconciled or resume else "starting"
        console.print(
            f"{verb} study [bold]{spec.name}[/] ({', '.join(f'{k} {v[:3]}' for k, v in spec.objectives.items())}) "
            f"sampler={spec.sampler}: {done}/{budget.trials} COMPLETE"
            + (f", {reconciled} interrupted trial(s) marked FAIL" if reconciled else ""),
            highlight=False,
        )

    summary = launcher.launch(
        spec, storage_url=storage, address=address, on_start=on_start, on_told=_progress_printer(budget.trials)
    )
    console.print(
        f"{summary.complete}/{summary.budget} COMPLETE in {summary.storage_url} "
        f"({summary.failed_this_run} failed this run, {summary.wall_seconds:.1f}s)",
        highlight=False,
    )
    resume_hint = f"paretune launch {spec_path}" + (f" --storage {storage}" if storage else "")
    if summary.interrupted:
        console.print(f"[yellow]search stopped before its budget; resume with:[/] {resume_hint}", highlight=False)
        raise typer.Exit(130)
    if summary.complete < summary.budget:
        console.print(
            f"[red]stopped after {summary.failed_this_run} failed trials[/] (budget.max_failed_trials); "
            f"see reasons with: paretune status {spec.name}",
            highlight=False,
        )
        raise typer.Exit(1)
    console.print(f"next: paretune front {spec.name}" + (f" --storage {storage}" if storage else ""), highlight=False)


@app.command()
def status(
    name: str = typer.Argument(..., help="Study name (the spec's `name`)."),
    storage: Optional[str] = typer.Option(None, "--storage", help=STORAGE_HELP),
) -> None:
    """Trial counts by state and the best value of each objective so far."""
    from search.storage import load_study

    study = load_study(storage, name)
    trials = study.get_trials(deepcopy=False)
    counts = Counter(t.state.name for t in trials)
    console.print(f"study [bold]{name}[/]: {len(trials)} trials  " + "  ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    names = study.user_attrs.get("objectives") or [f"objective_{i}" for i in range(len(study.directions))]
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    if not complete:
        return
    table = Table("objective", "direction", "best", "trial")
    for i, (objective, direction) in enumerate(zip(names, study.directions)):
        pick = max if direction.name == "MAXIMIZE" else min
        best = pick(complete, key=lambda t: t.values[i])
        table.add_row(objective, direction.name.lower(), f"{best.values[i]:.4g}", str(best.number))
    console.print(table)
    console.print(f"Pareto front: {len(study.best_trials)} trials (paretune front {name})", highlight=False)


def main() -> None:
    try:
        app()
    except UsageError as exc:
        err_console.print(f"error: {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted", highlight=False)
        sys.exit(130)


if __name__ == "__main__":
    main()

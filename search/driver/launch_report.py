"""What a launch says while it runs and when it ends: the preflight table, the line
that starts (or resumes) the study, a line per finished trial with the progress
(`search.driver.progress`), then what this run stored, the front with its knee and
hypervolume, and what to do next.

`paretune launch` prints it, and so does `search.launch(..., verbose=True)`: one
`LaunchReport` gives `search.driver.launcher.launch` its callbacks and turns the
`LaunchSummary` it returns into the closing lines.

```python
report = LaunchReport(spec, Console())
with raynoise.quiet(on_stop=report.on_stop), report:
    summary = launcher.launch(spec, **report.callbacks())
code = report.end(summary)  # 0, or the exit code of a search that stopped short
```
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from search.core import optuna_internals
from search.core.spec import StudySpec
from search.core.storage import redact, storage_flag
from search.driver import pruned, rung_trust, stop_signals
from search.driver.launcher import LaunchSummary
from search.driver.lease import records
from search.driver.progress import PLAIN_EVERY_S, SearchProgress, clock
from search.driver.tell import RETRY_OF_ATTR
from search.driver.warmstart import ENQUEUED_ATTR, Seed
from search.results import pareto as fronts
from search.results.front_table import export_hint, print_front, print_hypervolume
from search.tasks.plugins import describe_params
from search.trial import feasibility, variants
from search.trial.preflight import PreflightReport
from spaces import study_work


def print_preflight(console: Console, err_console: Console, report: PreflightReport) -> None:
    """The preflight's table: each enabled choice, whether it works on the model, why."""
    if not report.checks:
        return
    console.print(
        f"preflight on {', '.join(report.models)} ({report.seconds:.1f}s):", highlight=False, soft_wrap=True
    )
    table = Table("dimension", "choice", "works", "detail", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for check in report.checks:
        dropped = any(d.choice == check.choice and d.dimension == check.dimension for d in report.dropped)
        verdict = "yes" if check.ok else ("[yellow]no: dropped[/]" if dropped else "[red]no[/]")
        table.add_row(check.dimension, check.choice, verdict, escape(check.detail))
    table.columns[3].overflow = "fold"  # reasons are long: fold them, never cut them
    console.print(table)
    for check in report.dropped:
        err_console.print(
            f"warning: searching without {check.key} {check.choice!r}: {check.detail}", highlight=False, markup=False, soft_wrap=True
        )
    for key, choice in report.fallbacks:
        err_console.print(
            f"warning: {key}: no choice works on this model; searching {choice!r} instead", highlight=False, markup=False,
            soft_wrap=True,
        )


def pruned_stages(before: int, at_rung: int) -> str:
    """`3 before training, 1 at a rung`: this run's PRUNED trials by stage."""
    return pruned.describe(Counter({pruned.BEFORE_TRAINING: before, pruned.AT_RUNG: at_rung}))


def stored_line(summary: LaunchSummary, told: Counter) -> str:
    """What this run stored: trials by state (`told`: this run's told states) and its wall time."""
    interrupted = summary.interrupted_trials
    failed = told["FAIL"] + interrupted
    stored = told["COMPLETE"] + failed + told["PRUNED"]
    stages = pruned_stages(summary.pruned_before_training, summary.pruned_at_rung)
    return (
        f"this run stored {stored} trial{'s' if stored != 1 else ''} in {clock(summary.wall_seconds)}: "
        f"{told['COMPLETE']} COMPLETE, {failed} FAIL" + (f" ({interrupted} interrupted)" if interrupted else "")
        + f", {told['PRUNED']} PRUNED" + (f" ({stages})" if stages else "")
        + (f"; {summary.reconciled} left RUNNING by an earlier run marked FAIL at the start" if summary.reconciled else "")
    )


def infeasible_line(study: optuna.Study, summary: LaunchSummary, spec: StudySpec) -> str:
    """Why the search stopped early: no config it tried could meet a hard constraint (Rich markup)."""
    closest = feasibility.closest(study.get_trials(deepcopy=False), feasibility.static_constraints(spec))
    return (
        f"[yellow]stopped after {summary.pruned_before_training} trials infeasible before training[/] "
        f"(budget.max_infeasible_trials = {spec.budget.max_infeasible_trials or spec.budget.trials}): "
        + "; ".join(
            f"{c} not met, the closest measured {c.objective} {value:.3g} (trial {number})" for c, value, number in closest
        )
        + ". Loosen the constraint, or search smaller models or more compression."
    )


class LaunchReport:
    """The progress and the summary of one launch, printed on `console`.

    `storage`: the storage URL as the user gave it (None: the default), for the
    commands printed. `every_s`: seconds between plain status lines when `console` is
    not a terminal. `resume`: the user asked to resume (the first line says
    "resuming" even for a study with no trial yet). `spec_path`: the spec file
    `paretune launch` was given, for the commands that launch it again (None: the
    Python API's words instead); `renamed`: the study's name is not the file's own
    (`--name`, or an exported config's new study), so those commands say `--name`.
    `own_seed`: the params of an exported config the spec file is (search.driver.warmstart).
    """

    def __init__(
        self,
        spec: StudySpec,
        console: Console,
        err_console: Console | None = None,
        *,
        storage: str | None = None,
        every_s: float = PLAIN_EVERY_S,
        resume: bool = False,
        spec_path: Path | str | None = None,
        renamed: bool = False,
        own_seed: Seed | None = None,
    ):
        self.spec, self.console = spec, console
        self.err_console = err_console if err_console is not None else Console(stderr=True)
        self.storage, self.resume, self.own_seed = storage, resume, own_seed
        self.spec_path, self.renamed = spec_path, renamed
        self.preflight: PreflightReport | None = None
        budget = spec.budget
        self.progress = SearchProgress(
            console, budget=budget.trials, concurrency=budget.concurrency, objectives=spec.objective_names,
            describe=self.describe, every_s=every_s, name=spec.name,
        )

    # --- the launcher's callbacks ------------------------------------------------------

    def callbacks(self, on_told: Callable[[FrozenTrial], None] | None = None) -> dict:
        """The keyword arguments of `search.driver.launcher.launch` that report to this; `on_told`
        is called after the trial's line."""
        told = self.progress.told
        if on_told is not None:
            def told(trial: FrozenTrial, _line=self.progress.told) -> None:
                _line(trial)
                on_told(trial)
        return {
            "on_preflight": self.on_preflight, "on_start": self.on_start, "on_told": told,
            "on_reconciled": self.on_reconciled, "on_notice": self.on_notice,
        }

    def on_preflight(self, report: PreflightReport) -> None:
        self.preflight = report
        print_preflight(self.console, self.err_console, report)

    def describe(self, params: dict) -> str:
        """A trial's model in a few words, one per dimension (`cnn/structured 0.42/static`)."""
        if self.preflight is None:
            return ""
        return describe_params(params, self.preflight.spec, self.preflight.task_kind)

    def on_start(self, study: optuna.Study, reconciled: int) -> None:
        """The study is open: which study, how far it is, what runs first; then the progress."""
        spec, budget, console = self.spec, self.spec.budget, self.console
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        fresh = len(study.get_trials(deepcopy=False)) == len(waiting) and not reconciled
        verb = "starting" if fresh and not self.resume else "resuming"
        drivers = records(optuna_internals.storage_of(study), optuna_internals.study_id(study))
        others = sum(r.alive() for r in drivers.values()) - 1  # less this one
        console.print(
            f"{verb} study [bold]{spec.name}[/] ({', '.join(f'{k} {v[:3]}' for k, v in spec.objectives.items())}) "
            f"sampler={spec.sampler}: {done}/{budget.trials} COMPLETE"
            + (f", {others} other driver(s) running" if others > 0 else "")
            + (f", {reconciled} interrupted trial(s) of stopped drivers marked FAIL" if reconciled else ""),
            highlight=False,
            soft_wrap=True,
        )
        rerun = sum(RETRY_OF_ATTR in t.user_attrs for t in waiting)
        if rerun:
            console.print(f"{rerun} trial(s) the last stop cut short run again first", highlight=False)
        for trial in waiting:
            source = trial.user_attrs.get(ENQUEUED_ATTR)
            if source:
                console.print(f"warm start: trial {trial.number} runs the params of {escape(source)}", highlight=False, soft_wrap=True)
        own_seed = self.own_seed
        if own_seed is not None and not any(t.user_attrs.get(ENQUEUED_ATTR) == own_seed.source for t in waiting):
            console.print(
                escape(f"{self.spec_path}: [params] not enqueued again: study {spec.name} exists (it ran them when it was created)"),
                highlight=False,
                soft_wrap=True,
            )
        for work in study_work(spec) if done < budget.trials else ():  # e.g. a model trained once per launch
            console.print(f"{work} ...", highlight=False)
        self.progress.start(study)

    def on_stop(self) -> None:
        """Ctrl-C (or SIGTERM, SIGHUP), in place of Tune's "checkpoint" message (`raynoise.quiet(on_stop=)`)."""
        signum = stop_signals.received()
        what = f" on {signal.Signals(signum).name}" if signum is not None else ""
        again = f"{signal.Signals(signum).name} or Ctrl-C" if signum is not None else "Ctrl-C"
        self.console.print(
            f"[yellow]stopping{what}:[/] trials still running will be stored as FAIL (interrupted); {again} again to stop at once",
            highlight=False,
        )

    def on_reconciled(self, trial: FrozenTrial, what: str) -> None:
        self.progress.note(f"[yellow]trial {trial.number:>4} FAIL[/] {escape(what)}")

    def on_notice(self, text: str) -> None:
        self.progress.note(f"[yellow]{escape(text)}[/]")

    def __enter__(self) -> "LaunchReport":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    # --- the end -----------------------------------------------------------------------

    def _relaunch(self, renamed: bool) -> str | None:
        """The command that launches this study again (None for the Python API)."""
        if self.spec_path is None:
            return None
        return f"paretune launch {self.spec_path}" + (f" --name {self.spec.name}" if renamed else "") + storage_flag(self.storage)

    def end(self, summary: LaunchSummary) -> int:
        """Print what this run stored, what the search found and what to do next; returns
        0, or the exit code of a search that stopped short (1: failed trials or
        unstored results; 130, 143, 129: Ctrl-C, SIGTERM, SIGHUP)."""
        console, spec = self.console, self.spec
        self.print_result(summary)
        if summary.tracking:
            console.print(escape(summary.tracking), highlight=False, soft_wrap=True)
        if summary.replayed:
            console.print(f"added {summary.replayed} result(s) an earlier run could not store", highlight=False)
        if summary.unsaved:
            command = self._relaunch(renamed=False)
            console.print(
                f"[red]the storage did not take {summary.unsaved} result(s):[/] kept in {summary.unsaved_path}; "
                + (f"the next `{command}` adds them" if command else f"the next launch of study {spec.name} in this storage adds them"),
                highlight=False, soft_wrap=True,
            )
            return 1
        if summary.interrupted:
            command = self._relaunch(renamed=self.renamed)
            stopped = f"search stopped before its budget ({summary.complete}/{summary.budget} COMPLETE)"
            console.print(
                f"[yellow]{stopped}; resume with:[/] {escape(command)}" if command
                else f"[yellow]{stopped}; launching study {escape(spec.name)} again resumes it[/]",
                highlight=False,
                soft_wrap=True,
            )
            return stop_signals.exit_code()  # 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP
        if summary.complete < summary.budget and summary.infeasible_stop:
            return 0  # a finding, not a failure: no config tried meets the constraints (printed above)
        if summary.complete < summary.budget:
            console.print(
                f"[red]stopped after {summary.failed_this_run} failed trials[/] (budget.max_failed_trials); "
                f"see reasons with: paretune status {spec.name}{storage_flag(self.storage)}",
                highlight=False,
                soft_wrap=True,
            )
            return 1
        return 0

    def print_result(self, summary: LaunchSummary) -> None:
        """What this run stored, then what the search found: the front with its knee, the
        hypervolume and the command that exports the knee."""
        console, spec, study = self.console, self.spec, self.progress.study
        console.print(stored_line(summary, self.progress.told_counts), highlight=False, soft_wrap=True)
        if study is None:
            return
        if summary.infeasible_stop:
            console.print(infeasible_line(study, summary, spec), highlight=False, soft_wrap=True)
        report = fronts.report(study)
        console.print(
            f"study [bold]{spec.name}[/]: {summary.complete}/{summary.budget} COMPLETE in {redact(summary.storage_url)}; "
            f"{len(report.front)} on the Pareto front of {len(report.feasible)} feasible trials",
            highlight=False,
            soft_wrap=True,
        )
        print_front(console, report)
        print_hypervolume(console, report)
        complete = [t for t in report.trials if t.state.name == "COMPLETE"]
        trainings = variants.trainings(complete)
        if trainings < len(complete):
            console.print(f"{variants.count_words(trainings, len(complete), len(report.front))}", highlight=False, soft_wrap=True)
        rungs = rung_trust.summary(report.trials, study.metric_names)
        if rungs:
            console.print(f"early stopping ({spec.stopping}): " + "; ".join(t.describe() for t in rungs), highlight=False, soft_wrap=True)
        if report.knee is not None:
            console.print(
                f"export the knee (trial {report.knee.number}): {export_hint(spec.name, storage_flag(self.storage))}",
                highlight=False,
                soft_wrap=True,
            )

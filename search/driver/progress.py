"""Where a running search stands: counts, elapsed time, ETA, best values, the front.

`SearchProgress` is fed by `search.launch.launch`'s callbacks (`start` as `on_start`,
`told` as `on_told`) and by a background tick that reads the study from its storage
(the storage is the truth: trials of other drivers sharing the study count too).

- On a terminal: one status area under the per-trial lines, redrawn in place
  (rich Live): a bar of COMPLETE trials against the budget, running / failed / pruned,
  elapsed and ETA, the best value of each objective, the front's size and hypervolume.
- Elsewhere (CI logs, the log of a `paretune submit` job): the per-trial lines and one
  plain `progress:` line every `every_s` seconds.

ETA: a list-scheduling estimate from the study's own trial times. Finished trials
(COMPLETE, FAIL, PRUNED; not the ones an interrupted run left behind) give the
duration distribution and the share that ends COMPLETE; the trials still needed go
onto `concurrency` slots behind the running ones. The median duration gives the ETA,
the 25th and 75th percentiles its range. No ETA before the first trial finishes.
"""

from __future__ import annotations

import datetime as dt
import heapq
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from search.driver import pruned, rung_trust
from search.driver.searcher import INTERRUPTED
from search.driver.tell import BASELINE_ATTR, FAIL_REASON_ATTR
from search.results import pareto as fronts
from search.trial import timing, variants

FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
TERMINAL_POLL_S = 2.0  # storage reads while the terminal display is up
PLAIN_EVERY_S = 30.0  # default gap between plain status lines


def clock(seconds: float | None) -> str:
    """0:41, 12:05, 1:02:03; '?' for None."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(max(0.0, seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def was_interrupted(trial: FrozenTrial) -> bool:
    return trial.state == TrialState.FAIL and str(trial.user_attrs.get(FAIL_REASON_ATTR, "")).startswith(
        INTERRUPTED.split(":")[0]
    )


def finish_time(duration_s: float, running_elapsed_s: list[float], to_start: int, slots: int) -> float:
    """Seconds until `to_start` more trials of `duration_s` each have run on `slots`
    slots, the running trials (elapsed so far given) finishing first, each at
    `duration_s` or a moment from now if already past it."""
    slots = max(slots, len(running_elapsed_s), 1)
    free_at = [max(duration_s - e, 0.0) for e in running_elapsed_s] + [0.0] * (slots - len(running_elapsed_s))
    heapq.heapify(free_at)
    for _ in range(to_start):
        heapq.heappush(free_at, heapq.heappop(free_at) + duration_s)
    return max(free_at) if free_at else 0.0


def eta_seconds(
    durations_s: list[float], complete_share: float, needed: int, running_elapsed_s: list[float], slots: int
) -> tuple[float, float, float] | None:
    """(median, low, high) seconds until `needed` more COMPLETE trials, from the
    durations of finished trials and the share of them that ended COMPLETE; None
    before any trial finished."""
    if needed <= 0:
        return 0.0, 0.0, 0.0
    if not durations_s:
        return None
    share = max(complete_share, 0.05)  # a run of failures would otherwise promise forever
    from_running = len(running_elapsed_s) * share
    to_start = max(0, math.ceil((needed - from_running) / share - 1e-9))
    q25, q50, q75 = np.percentile(durations_s, [25, 50, 75])
    return tuple(finish_time(float(q), running_elapsed_s, to_start, slots) for q in (q50, q25, q75))


@dataclass
class Snapshot:
    """The study as read from the storage at one moment."""

    counts: Counter = field(default_factory=Counter)  # state name -> trials, whole study
    best: list[FrozenTrial | None] = field(default_factory=list)  # per objective, feasible trials
    front_size: int = 0
    feasible: int = 0
    hypervolume: float | None = None
    eta: tuple[float, float, float] | None = None
    durations: int = 0  # finished trials the ETA is based on
    pruned: Counter = field(default_factory=Counter)  # PRUNED trials by stage (search.driver.pruned)
    trainings: int = 0  # trainings the COMPLETE trials came from (search.trial.variants)
    rungs: list = field(default_factory=list)  # each early-stopping rung's trust (search.driver.rung_trust)


def busy_seconds(trial: FrozenTrial) -> float:
    """A finished trial's duration less the time it waited for a slot, asked ahead
    (`search.trial.timing`): the time a slot spent on it."""
    seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
    parts = timing.breakdown(trial)
    return seconds - parts["queued"] if parts is not None else seconds


def take(study: optuna.Study, budget: int, slots: int, now: dt.datetime | None = None) -> Snapshot:
    """Read the study once and summarize it (counts, best, front, hypervolume, ETA)."""
    now = now or dt.datetime.now()
    report = fronts.report(study)
    trials = report.trials
    counts = Counter(t.state.name for t in trials)
    finished = [
        t for t in trials
        if t.state in FINISHED and not was_interrupted(t) and t.datetime_start and t.datetime_complete
    ]
    share = sum(t.state == TrialState.COMPLETE for t in finished) / len(finished) if finished else 1.0
    # A slot runs a training and its variants together (search.trial.variants): count in
    # trainings, each worth the study's mean number of trials per training.
    durations = list({variants.training_of(t): busy_seconds(t) for t in finished}.values())
    per_training = len(finished) / len(durations) if durations else 1.0
    running_by_training: dict[int, float] = {}
    for t in trials:
        if t.state == TrialState.RUNNING and t.datetime_start:
            key = variants.training_of(t)
            running_by_training[key] = max(running_by_training.get(key, 0.0), (now - t.datetime_start).total_seconds())
    running = list(running_by_training.values())
    needed = budget - counts["COMPLETE"]
    needed_trainings = math.ceil(needed / per_training - 1e-9) if needed > 0 else needed
    return Snapshot(
        counts=counts,
        best=fronts.best_per_objective(report.feasible, report.objectives),
        front_size=len(report.front),
        feasible=len(report.feasible),
        hypervolume=report.hypervolume if report.front else None,
        eta=eta_seconds(durations, share, needed_trainings, running, slots),
        durations=len(durations),
        pruned=pruned.counts(trials),
        trainings=variants.trainings([t for t in trials if t.state == TrialState.COMPLETE]),
        rungs=rung_trust.summary(trials, study.metric_names),
    )


class SearchProgress:
    """The progress display of one `paretune launch`; use as a context manager around
    the launch, passing `start` and `told` as its callbacks."""

    def __init__(
        self,
        console: Console,
        *,
        budget: int,
        concurrency: int,
        objectives: list[str],
        describe=lambda params: "",
        every_s: float = PLAIN_EVERY_S,
        live: bool | None = None,
        name: str = "search",
    ):
        self.console, self.budget, self.slots, self.name = console, budget, concurrency, name
        self.objectives, self.describe, self.every_s = objectives, describe, every_s
        self.live_mode = console.is_terminal if live is None else live
        self.study: optuna.Study | None = None
        self.snapshot: Snapshot | None = None
        self.told_counts: Counter = Counter()  # states of the trials this run told
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._poke = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: Live | None = None

    # --- callbacks -------------------------------------------------------------------

    def start(self, study: optuna.Study) -> None:
        """The study is open: start the status area (terminal) or the periodic lines."""
        self.study = study
        self.refresh()
        if self.live_mode:
            self._live = Live(self, console=self.console, refresh_per_second=2, transient=True)
            self._live.start()
        self._thread = threading.Thread(target=self._tick, name="paretune-progress", daemon=True)
        self._thread.start()

    def told(self, trial: FrozenTrial) -> None:
        """One line per finished trial, above the status area."""
        self.told_counts[trial.state.name] += 1
        # A terminal wraps a long line between words; a log keeps it on one line.
        wrap = {"highlight": False, "soft_wrap": not self.console.is_terminal}
        if trial.state == TrialState.COMPLETE:
            source = trial.user_attrs.get("energy_source")
            values = " ".join(
                f"{name}={value:.4g}" + (f" ({source})" if name == "energy_mj" and source else "")
                for name, value in zip(self.objectives, trial.values)
            )
            recorded_for = trial.user_attrs.get("recorded_for")  # search.driver.tell: its first trial was failed by another driver
            training = variants.training_of(trial)
            role = " (baseline)" if trial.user_attrs.get(BASELINE_ATTR) else (
                f" (variant of trial {training}'s training)" if training != trial.number else "")
            self.console.print(
                f"[green]trial {trial.number:>4} COMPLETE[/] {escape(values)}  {escape(self.describe(trial.params))}{role}"
                + (f" (the result of trial {recorded_for}, which another driver had failed)" if recorded_for is not None else ""),
                **wrap,
            )
        elif trial.state == TrialState.PRUNED:
            reason = escape(str(trial.user_attrs.get(pruned.REASON_ATTR, "")))
            self.console.print(f"[yellow]trial {trial.number:>4} PRUNED[/] {reason}", **wrap)
        else:
            reason = escape(str(trial.user_attrs.get(FAIL_REASON_ATTR, "")))
            self.console.print(f"[red]trial {trial.number:>4} {trial.state.name}[/] {reason}", **wrap)
        self._poke.set()

    def note(self, text: str) -> None:
        """A line of news above the status area (Rich markup), e.g. another driver's trial reconciled."""
        self.console.print(text, highlight=False, soft_wrap=not self.console.is_terminal)
        self._poke.set()

    # --- the periodic tick -----------------------------------------------------------

    def refresh(self) -> Snapshot | None:
        """Read the storage now; a failed read keeps the last snapshot (the display must
        never stop the search)."""
        if self.study is None:
            return None
        try:
            self.snapshot = take(self.study, self.budget, self.slots)
        except Exception:  # noqa: BLE001 - e.g. a locked SQLite file for a moment
            pass
        return self.snapshot

    def _tick(self) -> None:
        """Terminal: read the storage every few seconds and at each told trial (Live
        redraws on its own). Plain: one line every `every_s` seconds."""
        last_line = time.monotonic()
        while not self._stop.is_set():
            if self.live_mode:
                self._poke.wait(TERMINAL_POLL_S)
                self._poke.clear()
                if not self._stop.is_set():
                    self.refresh()
            elif self._stop.wait(max(0.0, last_line + self.every_s - time.monotonic())) is False:
                self.refresh()
                self.console.print(self.line(), highlight=False, soft_wrap=True, markup=False)
                last_line = time.monotonic()

    def stop(self) -> None:
        self._stop.set()
        self._poke.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._live is not None:
            self._live.stop()
            self._live = None

    def __enter__(self) -> "SearchProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- what is shown ---------------------------------------------------------------

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def _best_text(self, snap: Snapshot, sep: str) -> str:
        parts = []
        for name, trial in zip(self.objectives, snap.best):
            if trial is not None:
                parts.append(f"{name}{sep}{trial.values[self.objectives.index(name)]:.4g} (#{trial.number})")
        return ("  " if sep == " " else " ").join(parts)

    @staticmethod
    def _pruned_text(snap: Snapshot) -> str:
        stages = pruned.describe(snap.pruned)
        return f"{snap.counts['PRUNED']} pruned" + (f" ({stages})" if stages else "")

    def _eta_text(self, snap: Snapshot) -> str:
        if snap.eta is None:
            return "ETA after the first trial"
        median, low, high = snap.eta
        if snap.counts["COMPLETE"] >= self.budget:
            return "ETA 0:00"
        spread = f" ({clock(low)}-{clock(high)})" if clock(low) != clock(high) else ""
        return f"ETA {clock(median)}{spread}"

    def line(self) -> str:
        """The plain status line (no terminal)."""
        snap = self.snapshot or Snapshot()
        c = snap.counts
        text = (
            f"progress {clock(self.elapsed_s)}: {c['COMPLETE']}/{self.budget} COMPLETE, {c['RUNNING']} running, "
            f"{c['FAIL']} failed, {self._pruned_text(snap)}; {self._eta_text(snap)}"
        )
        if snap.front_size:
            text += f"; best {self._best_text(snap, '=')}; front {snap.front_size}, hypervolume {snap.hypervolume:.4g}"
        if snap.trainings and snap.trainings < c["COMPLETE"]:
            text += f"; {variants.count_words(snap.trainings, c['COMPLETE'], snap.front_size)}"
        if snap.rungs:
            text += "; " + "; ".join(t.describe() for t in snap.rungs)
        return text

    def __rich__(self):
        """The terminal status area, redrawn by Live twice a second."""
        snap = self.snapshot or Snapshot()
        c = snap.counts
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column()
        bar = Table.grid(padding=(0, 1))
        bar.add_row(
            ProgressBar(total=max(self.budget, 1), completed=min(c["COMPLETE"], self.budget), width=30),
            Text(f"{c['COMPLETE']}/{self.budget} COMPLETE", style="green"),
            Text(f"{c['RUNNING']} running"),
            Text(f"{c['FAIL']} failed", style="red" if c["FAIL"] else None),
            Text(self._pruned_text(snap)),
        )
        grid.add_row(self.name, bar)
        basis = f", from {snap.durations} trial time{'s' if snap.durations != 1 else ''}" if snap.eta else ""
        grid.add_row("time", Text(f"elapsed {clock(self.elapsed_s)}  {self._eta_text(snap)}{basis}"))
        if snap.front_size:
            grid.add_row("best", Text(self._best_text(snap, " ")))
            grid.add_row("front", Text(f"{snap.front_size} of {snap.feasible} feasible trials, hypervolume {snap.hypervolume:.4g}"))
        else:
            grid.add_row("front", Text("no feasible COMPLETE trial yet"))
        if snap.trainings and snap.trainings < c["COMPLETE"]:
            grid.add_row("shared", Text(variants.count_words(snap.trainings, c["COMPLETE"], snap.front_size or None)))
        for trust in snap.rungs:  # early stopping: which rungs may stop trials yet
            grid.add_row("rungs" if trust is snap.rungs[0] else "", Text(trust.describe(), style=None if trust.trusted else "yellow"))
        return Group(grid)

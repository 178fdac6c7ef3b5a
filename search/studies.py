"""What a storage holds: one overview per study (`paretune studies`)."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from dataclasses import dataclass

import optuna

from search import lease

STATES = ("COMPLETE", "RUNNING", "WAITING", "FAIL", "PRUNED")


@dataclass(frozen=True)
class StudyOverview:
    name: str
    objectives: list[tuple[str, str]]  # (name, "maximize" | "minimize")
    counts: dict[str, int]  # trials by state name
    drivers: list[lease.DriverRecord]  # the live ones
    last_activity: dt.datetime | None  # latest trial start/finish or heartbeat (local time)

    @property
    def trials(self) -> int:
        return sum(self.counts.values())


def objective_names(summary: optuna.study.StudySummary, system_attrs: dict) -> list[str]:
    # Optuna's metric names (paretune sets them); older studies kept the names only as
    # the "objectives" user attr.
    names = system_attrs.get("study:metric_names") or summary.user_attrs.get("objectives")
    return list(names) if names else [f"objective_{i}" for i in range(len(summary.directions))]


def overview(storage: optuna.storages.BaseStorage, now: float | None = None) -> list[StudyOverview]:
    now = time.time() if now is None else now
    rows = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study_id = summary._study_id
        trials = storage.get_all_trials(study_id, deepcopy=False)
        stamps = [t.datetime_complete or t.datetime_start for t in trials if t.datetime_complete or t.datetime_start]
        system_attrs = storage.get_study_system_attrs(study_id)
        drivers = lease.records_in(system_attrs)
        stamps += [dt.datetime.fromtimestamp(r.ended or r.heartbeat) for r in drivers.values()]
        rows.append(
            StudyOverview(
                name=summary.study_name,
                objectives=list(zip(objective_names(summary, system_attrs), (d.name.lower() for d in summary.directions))),
                counts=dict(Counter(t.state.name for t in trials)),
                drivers=sorted((r for r in drivers.values() if r.alive(now)), key=lambda r: r.started),
                last_activity=max(stamps) if stamps else None,
            )
        )
    return sorted(rows, key=lambda r: r.name)

"""What a storage holds: one overview per study (`paretune studies`)."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from dataclasses import dataclass

import optuna

from search.core import optuna_internals
from search.driver import lease

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


def objective_names(study: optuna.Study) -> list[str]:
    # Metric names (paretune sets them); older studies kept the names only as the
    # "objectives" user attr.
    names = study.metric_names or study.user_attrs.get("objectives")
    return list(names) if names else [f"objective_{i}" for i in range(len(study.directions))]


def overview(storage: optuna.storages.BaseStorage, now: float | None = None) -> list[StudyOverview]:
    now = time.time() if now is None else now
    rows = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        stamps = [t.datetime_complete or t.datetime_start for t in trials if t.datetime_complete or t.datetime_start]
        drivers = lease.records(storage, optuna_internals.study_id(study))
        stamps += [dt.datetime.fromtimestamp(r.ended or r.heartbeat) for r in drivers.values()]
        rows.append(
            StudyOverview(
                name=study.study_name,
                objectives=list(zip(objective_names(study), (d.name.lower() for d in study.directions))),
                counts=dict(Counter(t.state.name for t in trials)),
                drivers=sorted((r for r in drivers.values() if r.alive(now)), key=lambda r: r.started),
                last_activity=max(stamps) if stamps else None,
            )
        )
    return sorted(rows, key=lambda r: r.name)

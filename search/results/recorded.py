"""What a launch recorded on its study, read back: the objectives (names and
directions), the spec, the task kind; and a trial's value by name (an objective, a
user attr or a param).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial

import spaces
from search.core.errors import UsageError
from search.core.records import OBJECTIVES_ATTR, SPEC_ATTR, TASK_KIND_ATTR
from search.core.spec import from_dict

MAXIMIZE, MINIMIZE = "maximize", "minimize"


@dataclass(frozen=True)
class Objectives:
    names: list[str]
    directions: list[str]  # "maximize" / "minimize", in the order of trial.values

    @property
    def signs(self) -> np.ndarray:
        """+1 where smaller is better: `values * signs` is a minimization problem."""
        return np.array([-1.0 if d == MAXIMIZE else 1.0 for d in self.directions])

    def index(self, name: str, context: str) -> int:
        if name not in self.names:
            raise UsageError(f"{context}: unknown objective {name!r}; the study's objectives are {', '.join(self.names)}")
        return self.names.index(name)


def objectives_of(study: optuna.Study) -> Objectives:
    directions = [MAXIMIZE if d == optuna.study.StudyDirection.MAXIMIZE else MINIMIZE for d in study.directions]
    names = study.user_attrs.get(OBJECTIVES_ATTR) or [f"objective_{i}" for i in range(len(directions))]
    if len(names) != len(directions):
        names = [f"objective_{i}" for i in range(len(directions))]
    return Objectives(list(names), directions)


def param_value(params: dict, name: str) -> Any:
    """The trial's value of dimension param `name`, under whichever Optuna name it was
    drawn (a dimension may draw one choice under per-condition names, e.g.
    `quant_mode_transformer`; the registry knows them)."""
    return spaces.param_value(params, name)


def lookup(trial: FrozenTrial, name: str, objectives: Objectives) -> Any:
    """An objective value, else a user attr, else a param; None when the trial has none."""
    if name in objectives.names and trial.values is not None:
        return trial.values[objectives.names.index(name)]
    if name in trial.user_attrs:
        return trial.user_attrs[name]
    return param_value(trial.params, name)


def study_spec(study: optuna.Study) -> dict:
    spec = study.user_attrs.get(SPEC_ATTR)
    if not isinstance(spec, dict):
        raise UsageError(
            f"study {study.study_name!r} has no recorded spec (user attr 'spec'); only studies run by "
            "`paretune launch` can be exported"
        )
    return spec


def recorded_spec(study: optuna.Study):
    """The study's spec as validated StudySpec (user dimensions' sections unvalidated)."""
    return from_dict(study_spec(study), source=f"study {study.study_name!r} spec")


def task_kind_of(study: optuna.Study) -> str:
    """The kind of task ("image", "tabular", "table", ...) a study searched: recorded at
    launch; for studies from before that, read from the task itself."""
    kind = study.user_attrs.get(TASK_KIND_ATTR)
    if isinstance(kind, str) and kind:
        return kind
    from search.tasks.data import load_task  # deferred: imports torch and reads the task

    return load_task(recorded_spec(study)).kind

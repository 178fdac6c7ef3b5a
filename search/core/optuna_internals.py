"""Every place paretune reaches into Optuna's private attributes, and why.

Optuna's public API covers one process asking and telling its own trials. paretune
runs several drivers on one storage, keeps outcomes that arrive after another driver
gave a trial up, and writes a trial's many measured values in one commit; for that it
talks to the storage underneath a study directly, by ids Optuna keeps private. Each
such reach is one function here, so an Optuna upgrade that moves one breaks here,
and nowhere else (checked against Optuna 5.1):

- `storage_of(study)`, `study_id(study)`, `trial_id(trial)`: `Study._storage`,
  `Study._study_id`, `Trial._trial_id` / `FrozenTrial._trial_id`. The storage calls
  paretune makes (state changes of a trial another driver may hold, study system
  attrs for driver heartbeats, reads without Optuna's cached copy) are keyed by
  these ids; Optuna exposes no public way to get them.
- `backend_of(storage)`: `_CachedStorage._backend`. Optuna wraps an RDB storage in a
  cache; its URL and its database sessions are on the storage inside.
- `validate(trial)`: `FrozenTrial._validate`, the check `Study.add_trial` runs before
  storing a trial; paretune stores such a trial itself to learn its id.
- `forget_cached_trials(study)`: `Study._thread_local.cached_all_trials`, the trials a
  sampler sees, which `Study.ask` clears before sampling a new trial; a trial created
  with fixed params outside `ask` must clear it too.
- `set_trial_user_attrs(backend, ...)` and `add_trial_system_attr(backend, ...)`: the
  RDB storage's own session helper and per-attr step (`optuna.storages._rdb`). Its
  public calls commit once per attr and refuse a finished trial; paretune writes a
  trial's 40 or so measured values in one commit, and attaches exported files to a
  finished trial for optuna-dashboard.
"""

from __future__ import annotations

import json
from typing import Any

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage a study reads and writes (Optuna's cache wrapper, for an RDB storage)."""
    return study._storage


def study_id(study: optuna.Study) -> int:
    """The storage's id of a study: what every per-study storage call takes."""
    return study._study_id


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of a trial (not its number): what every per-trial storage call takes."""
    return trial._trial_id


def backend_of(storage: BaseStorage) -> BaseStorage:
    """The storage under Optuna's cache wrapper (an RDBStorage), else `storage` itself."""
    return getattr(storage, "_backend", storage)


def rdb_of(storage: BaseStorage) -> RDBStorage | None:
    """The RDB storage `storage` is or wraps; None for any other storage."""
    backend = backend_of(storage)
    return backend if isinstance(backend, RDBStorage) else None


def validate(trial: FrozenTrial) -> None:
    """What `Study.add_trial` checks of a trial before storing it (ValueError if it is not whole)."""
    trial._validate()


def forget_cached_trials(study: optuna.Study) -> None:
    """Drop the study's cached trials, as `Study.ask` does, so the sampler sees fresh ones."""
    study._thread_local.cached_all_trials = None


def set_trial_user_attrs(backend: RDBStorage, trial_id: int, attrs: dict) -> None:
    """Every item of `attrs` as a user attr of one trial, in one transaction: the RDB
    storage's own per-key step, inside its own session helper, once for every key.
    Raises UpdateFinishedTrialError, like Optuna's public call, if the trial is finished."""
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(backend.scoped_session, True) as session:
        for key, value in attrs.items():
            backend._set_trial_attr_without_commit(session, models.TrialUserAttributeModel, trial_id, key, value)


def add_trial_system_attr(backend: RDBStorage, trial_id: int, key: str, value: Any) -> None:
    """A new system attr row on a trial, finished or not (Optuna's public call refuses
    a finished trial); an existing key makes the insert fail."""
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(backend.scoped_session, True) as session:
        session.add(models.TrialSystemAttributeModel(trial_id=trial_id, key=key, value_json=json.dumps(value)))

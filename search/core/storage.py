"""Optuna storage from a URL: the one source of truth for every trial.

- no URL: `$PARETUNE_STORAGE`, else `sqlite:///paretune.db` in the working directory
- `sqlite:///path.db`: RDB storage with a 30 s lock timeout (a short timeout loses
  trials to "database is locked" under concurrent writers)
- any other SQLAlchemy URL (`postgresql://user:pw@host/db`, ...): RDB storage
- `journal:///path/to/file.log` (or a path ending in .log/.journal): Optuna's
  JournalStorage file backend, for shared filesystems

`launch` opens a storage creating it if needed (`open_storage`); the commands that
only read (status, front, export, dashboard) go through `load_study`, which creates
nothing: a mistyped path is an error naming it, not a new empty database.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from search.core import optuna_internals
from search.core.errors import UsageError

DEFAULT_URL = "sqlite:///paretune.db"
SQLITE_TIMEOUT_S = 30


def resolve_url(url: str | None) -> str:
    return url or os.environ.get("PARETUNE_STORAGE") or DEFAULT_URL


def _journal_path(url: str) -> Path | None:
    if url.startswith("journal://"):
        return Path(url[len("journal://") :])
    if "://" not in url and url.endswith((".log", ".journal")):
        return Path(url)
    return None


def _with_driver(url: str) -> str:
    """SQLAlchemy 2.1 reads a bare postgresql:// URL as psycopg 3; the dependency
    installed is psycopg2, so name it unless psycopg 3 is there."""
    if url.startswith(("postgresql://", "postgres://")):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


# What the loser of two processes creating one new database's tables at once is told
# (SQLite, PostgreSQL).
CREATE_RACE = ("already exists", "UNIQUE constraint failed: alembic_version", "duplicate key value")


def _rdb(url: str, engine_kwargs: dict, create: bool = True) -> RDBStorage:
    """`create=False`: read-only commands never create Optuna's tables."""
    for attempt in range(3):
        try:
            return RDBStorage(url, engine_kwargs=engine_kwargs, skip_table_creation=not create)
        except Exception as exc:  # noqa: BLE001 - SQLAlchemy's error types vary by backend
            # Drivers started together on a new database race to create Optuna's tables
            # and to stamp their schema version (alembic_version); the loser finds them
            # made: open again, they are there now.
            if attempt == 2 or not any(text in str(exc) for text in CREATE_RACE):
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")


def redact(url: str) -> str:
    """A storage URL with its password replaced by ***."""
    return re.sub(r"(://[^/:@]+:)[^@/]*@", r"\1***@", url)


def storage_flag(storage: str | None) -> str:
    """The --storage part of a printed command; a password in the URL shows as ***."""
    return f" --storage {redact(storage)}" if storage else ""


def _sqlite_path(url: str) -> Path | None:
    """The file of a sqlite:/// URL; None for an in-memory database or another backend."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///") :].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def _check_exists(url: str) -> None:
    """A read-only command on a storage that is not there: say so, create nothing."""
    path = _journal_path(url) or _sqlite_path(url)
    if path is not None and not path.is_file():
        default = " (the default storage; pass --storage or set $PARETUNE_STORAGE)" if url == DEFAULT_URL else ""
        raise UsageError(f"--storage {url}: no such file {path}{default}")


def open_storage(url: str | None, *, create: bool = True) -> optuna.storages.BaseStorage:
    """Open the storage, creating it if needed (`create=False`: it must exist already, and
    nothing is written to it on opening); an unusable URL is a UsageError naming it."""
    url = resolve_url(url)
    journal = _journal_path(url)
    if not create:
        _check_exists(url)
    try:
        if journal is not None:
            if not journal.parent.is_dir():
                raise UsageError(f"--storage {url}: directory {journal.parent} does not exist")
            return JournalStorage(JournalFileBackend(str(journal)))
        if "://" not in url:
            raise UsageError(f"--storage {url}: not a storage URL (use sqlite:///file.db, postgresql://..., journal:///file.log)")
        if url.startswith("sqlite:///"):
            db_path = Path(url[len("sqlite:///") :])
            if db_path.parent != Path("") and not db_path.parent.is_dir():
                raise UsageError(f"--storage {url}: directory {db_path.parent} does not exist")
            return _rdb(url, {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}, create)
        return _rdb(_with_driver(url), {"pool_pre_ping": True}, create)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy/driver errors vary by backend
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        # Never echo a password: the URL may carry one (postgresql://user:pw@host/db).
        shown = redact(url)
        raise UsageError(f"--storage {shown}: cannot open storage ({first[:200].replace(url, shown)})") from None


def serialize_sqlite(storage: optuna.storages.BaseStorage) -> None:
    """For a driver on SQLite: begin every transaction with BEGIN IMMEDIATE.

    pysqlite runs a transaction's first SELECT before its BEGIN, so Optuna's
    read-then-write steps (RUNNING -> FAIL, taking a queued trial) are not atomic
    between processes: two drivers reconciling the same trial both "win" and queue it
    twice. BEGIN IMMEDIATE (SQLAlchemy's recipe for pysqlite) takes the write lock
    first, so one of them waits and then sees the trial finished. Other storages
    already lock the row (PostgreSQL) or order writes by a log (JournalStorage).
    """
    if not isinstance(storage, RDBStorage) or storage.engine.dialect.name != "sqlite":
        return
    from sqlalchemy import event

    @event.listens_for(storage.engine, "connect")
    def _no_implicit_begin(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(storage.engine, "begin")
    def _begin_immediate(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    storage.engine.dispose()  # connections opened before the listeners: drop them


def study_exists(storage: optuna.storages.BaseStorage, name: str) -> bool:
    return any(s.study_name == name for s in optuna.get_all_study_summaries(storage, include_best_trial=False))


def load_study(url: str | None, name: str) -> optuna.Study:
    """The study `name` in an existing storage, for reading; creates no storage."""
    storage = open_storage(url, create=False)
    if not study_exists(storage, name):
        names = ", ".join(s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False))
        raise UsageError(f"study {name!r} not found in {resolve_url(url)} (studies: {names or 'none'})")
    return optuna.load_study(study_name=name, storage=storage)


def set_user_attrs(storage: optuna.storages.BaseStorage, trial_id: int, attrs: dict) -> None:
    """Write all of `attrs` as user attrs of one trial, in one transaction on an RDB
    storage: a trial's outcome carries some 40 measured values, and one commit each
    (an fsync each on SQLite, ~3 ms) held the search's event loop ~0.1 s per trial,
    while the other trials' reports waited on it. Other storages get one call per key.
    Raises UpdateFinishedTrialError, like Optuna's own call, if the trial is finished."""
    backend = optuna_internals.rdb_of(storage)  # optuna wraps an RDBStorage in a cache
    if backend is None or not attrs:
        for key, value in attrs.items():
            storage.set_trial_user_attr(trial_id, key, value)
        return
    # Optuna's RDBStorage has no public call for several attrs (search.core.optuna_internals).
    optuna_internals.set_trial_user_attrs(backend, trial_id, attrs)


def add_finished_trial_system_attr(storage: optuna.storages.BaseStorage, trial_id: int, key: str, value) -> bool:
    """Add a system attr to a trial even when it is finished: Optuna refuses that (a
    finished trial is final), but a file exported or trained from a trial afterwards
    belongs on its page in optuna-dashboard, which reads a trial's artifacts from its
    system attrs. Only a new key is added (never a value changed); RDB storages only:
    False elsewhere (a journal replays its log through Optuna's own checks)."""
    backend = optuna_internals.rdb_of(storage)
    if backend is None:
        return False
    optuna_internals.add_trial_system_attr(backend, trial_id, key, value)  # below Optuna's checks
    return True

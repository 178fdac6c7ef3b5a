"""Storage calls that ride out an outage.

A call that fails for a passing reason (SQLite's lock timeout, a dropped PostgreSQL
connection, a journal file briefly unwritable) is retried with backoff (`retrying`);
each retry is one line for the user (`retry_line`): why, in a few words (`cause`),
when the next attempt comes, and how many finished results this process holds that
the storage does not have yet (a searcher counts its own: `holding`), none of them
lost. The same line from several threads at once is said once in SAY_ONCE_S.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import optuna

# Seconds between attempts of a storage call that failed for a passing reason (about a
# minute in all, on top of SQLite's own 30 s lock wait per attempt).
RETRY_WAITS_S = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)

T = TypeVar("T")
log = logging.getLogger(__name__)


class StorageUnavailable(Exception):
    """A storage call still failed after every retry."""


def is_transient(exc: BaseException) -> bool:
    """Errors a retry may cure: locks, timeouts, lost connections, I/O."""
    import sqlalchemy.exc

    if isinstance(exc, (optuna.exceptions.StorageInternalError, sqlalchemy.exc.OperationalError, OSError)):
        return True
    return isinstance(exc, sqlalchemy.exc.DBAPIError) and bool(exc.connection_invalidated)


# Why a storage call failed, in a few words: (text in the error, what the user reads).
CAUSES = (
    ("connection refused", "connection refused"),
    ("database is locked", "database is locked"),
    ("server closed the connection", "server closed the connection"),
    ("terminating connection", "server closed the connection"),
    ("ssl connection has been closed", "server closed the connection"),
    # SQLAlchemy's PendingRollbackError: a session whose connection dropped inside a
    # transaction, met by a thread that shares it before the rollback.
    ("invalid transaction is rolled back", "server closed the connection"),
    ("the database system is starting up", "server starting up"),
    ("the database system is shutting down", "server shutting down"),
    ("could not translate host name", "host not found"),
    ("no route to host", "no route to host"),
    ("no space left on device", "disk full"),
    ("timeout", "timeout"),
    ("timed out", "timeout"),
)

# Counters of the finished results held by the searchers running in this process.
_holders: list[Callable[[], int]] = []
# The last retry line logged and when: calls failing together (a tell, a count, the
# lease's heartbeat; each on its own thread) say it once in this many seconds.
_last_said = ["", 0.0]
_said_lock = threading.Lock()
SAY_ONCE_S = 5.0


def _first_line(exc: BaseException) -> str:
    # StorageInternalError says only "An exception is raised during the commit";
    # the cause (e.g. "database is locked") is what helps.
    cause = exc.__cause__ or exc
    text = str(getattr(cause, "orig", None) or cause).strip()
    return f"{type(cause).__name__}: {text.splitlines()[0][:200] if text else ''}"


def cause(exc: BaseException) -> str:
    """Why a storage call failed, as the user would say it (`CAUSES`); else the first
    line of the error. The driver's own wrappers (Optuna's StorageInternalError,
    SQLAlchemy's OperationalError) are looked through to the database's message."""
    inner = exc.__cause__ or exc
    text = " ".join(str(e) for e in (exc, inner, getattr(inner, "orig", None)) if e is not None)
    found = next((phrase for needle, phrase in CAUSES if needle in text.lower()), None)
    return found or _first_line(exc)


@contextmanager
def holding(count: Callable[[], int]) -> Iterator[None]:
    """While the block runs, `count()` finished results (held by a searcher, not yet in
    the storage) are added to the count each retry line gives."""
    _holders.append(count)
    try:
        yield
    finally:
        _holders.remove(count)


def retry_line(exc: BaseException, retry: int, wait_s: float, held: int) -> str:
    """The line a user reads while a storage call is retried: the cause, when the next
    attempt comes, and that the results finished meanwhile wait safely (in memory, or
    in the unsaved file the next launch adds), so none is lost."""
    kept = f"{held} result{'s' if held != 1 else ''} held, none lost" if held else "no results held"
    return f"storage unreachable ({cause(exc)}): retry {retry} in {wait_s:g} s; {kept}"


def _say(line: str) -> None:
    """Log `line`, unless the same line was logged less than SAY_ONCE_S ago."""
    with _said_lock:
        now = time.monotonic()
        if line == _last_said[0] and now - _last_said[1] < SAY_ONCE_S:
            return
        _last_said[:] = [line, now]
    log.warning(line)


def retrying(call: Callable[[], T]) -> T:
    """`call()`, retried after RETRY_WAITS_S while it fails with a transient error;
    StorageUnavailable once they are used up."""
    for attempt, wait in enumerate((*RETRY_WAITS_S, None), start=1):
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - sorted by is_transient
            if not is_transient(exc):
                raise
            if wait is None:
                raise StorageUnavailable(f"{_first_line(exc)} (after {attempt} attempts)") from exc
            _say(retry_line(exc, attempt, wait, sum(count() for count in list(_holders))))
            time.sleep(wait)
    raise AssertionError("unreachable")

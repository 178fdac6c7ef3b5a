"""Driver leases: which driver holds which live trial, and whether that driver is alive.

Several drivers (several people, several machines) may run one study through one
storage. Each driver keeps a heartbeat record in the study (the study system attr
`paretune:driver:<id>`: host, pid, when it started, its last heartbeat, how long its
lease lasts) refreshed by a background thread, and marks each trial it asks with its
id (the trial system attr `paretune:driver`). A RUNNING trial belongs to its driver
until that driver's heartbeat is older than its lease; only then may another driver
mark it FAIL. Only study and trial system attrs are used, so this works the same on
SQLite, PostgreSQL and JournalStorage.

Heartbeats are wall-clock timestamps of the writing host: hosts sharing a study need
clocks that agree (NTP) to well within the lease. `PARETUNE_HEARTBEAT_S` (default 10)
and `PARETUNE_LEASE_S` (default 60) set the period and the lease of a new driver.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import optuna

from search.core import optuna_internals
from search.core.errors import UsageError
from search.core.records import DRIVER_ATTR, RECORD_PREFIX

HEARTBEAT_S = 10.0
LEASE_S = 60.0
# A driver claims a trial right after asking it; a RUNNING trial nobody claimed within
# this long (a driver killed in between, or one older than leases) has no driver.
UNCLAIMED_GRACE_S = 10.0


def _seconds_from_env(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"${name}={raw!r}: must be a number of seconds") from None
    if not value > 0:
        raise UsageError(f"${name}={raw!r}: must be > 0")
    return value


@dataclass(frozen=True)
class DriverRecord:
    """One driver's heartbeat record as stored in the study."""

    driver_id: str
    host: str
    pid: int
    started: float
    heartbeat: float
    lease_s: float
    heartbeat_s: float = HEARTBEAT_S
    ended: float | None = None

    @classmethod
    def from_attr(cls, driver_id: str, value: dict) -> "DriverRecord":
        return cls(
            driver_id=driver_id,
            host=str(value.get("host", "?")),
            pid=int(value.get("pid", 0)),
            started=float(value.get("started", 0.0)),
            heartbeat=float(value.get("heartbeat", 0.0)),
            lease_s=float(value.get("lease_s", LEASE_S)),
            heartbeat_s=float(value.get("heartbeat_s", HEARTBEAT_S)),
            ended=value.get("ended"),
        )

    def as_attr(self) -> dict:
        return {"host": self.host, "pid": self.pid, "started": self.started, "heartbeat": self.heartbeat,
                "lease_s": self.lease_s, "heartbeat_s": self.heartbeat_s, "ended": self.ended}

    def age(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.heartbeat

    def alive(self, now: float | None = None) -> bool:
        return self.ended is None and self.age(now) <= self.lease_s

    def silent(self, now: float | None = None) -> bool:
        """Alive by its lease, but it has missed heartbeats: perhaps dead, not yet known."""
        return self.alive(now) and self.age(now) > 2 * self.heartbeat_s + 1

    def describe(self) -> str:
        return f"{self.host} pid {self.pid}"


def records(storage: optuna.storages.BaseStorage, study_id: int) -> dict[str, DriverRecord]:
    """Every driver that ever ran the study, by id (ended and dead ones included)."""
    attrs = storage.get_study_system_attrs(study_id)
    return {
        key[len(RECORD_PREFIX):]: DriverRecord.from_attr(key[len(RECORD_PREFIX):], value)
        for key, value in attrs.items()
        if key.startswith(RECORD_PREFIX) and isinstance(value, dict)
    }


def owner_gone(
    trial: optuna.trial.FrozenTrial, drivers: dict[str, DriverRecord], now: float | None = None
) -> DriverRecord | str | None:
    """Why the RUNNING `trial`'s driver is gone (its record, or a sentence when it has
    none), or None while it may still be running it."""
    now = time.time() if now is None else now
    owner = trial.system_attrs.get(DRIVER_ATTR)
    record = drivers.get(owner) if owner else None
    if record is not None:
        return None if record.alive(now) else record
    # No known driver: one asked a moment ago whose driver has not claimed it yet, or
    # one whose driver died in between (or predates leases).
    started = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
    if now - started > UNCLAIMED_GRACE_S:
        return "no driver claimed it"
    return None


def owner_silent(trial: optuna.trial.FrozenTrial, drivers: dict[str, DriverRecord], now: float | None = None) -> bool:
    """The RUNNING `trial`'s driver has gone quiet but its lease has not run out yet."""
    now = time.time() if now is None else now
    owner = trial.system_attrs.get(DRIVER_ATTR)
    record = drivers.get(owner) if owner else None
    if record is not None:
        return record.silent(now)
    return owner_gone(trial, drivers, now) is None  # unclaimed and young: wait for it too


class DriverLease:
    """This driver's identity and heartbeat. `start(study)` writes the first heartbeat
    and starts two daemon threads: one refreshes the heartbeat every `heartbeat_s`,
    the other calls `on_beat` as often (the sweep that reconciles other drivers'
    expired trials; a slow sweep must never delay a heartbeat). `stop()` ends them and
    marks the record ended, so nobody waits for this lease to expire."""

    def __init__(self, *, heartbeat_s: float | None = None, lease_s: float | None = None):
        self.heartbeat_s = heartbeat_s or _seconds_from_env("PARETUNE_HEARTBEAT_S", HEARTBEAT_S)
        self.lease_s = lease_s or _seconds_from_env("PARETUNE_LEASE_S", LEASE_S)
        if self.lease_s < 2 * self.heartbeat_s:
            # One late heartbeat would then let other drivers fail this one's live trials.
            raise UsageError(
                f"$PARETUNE_LEASE_S={self.lease_s:g} must be at least twice $PARETUNE_HEARTBEAT_S={self.heartbeat_s:g}"
            )
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.id = f"{self.host}-{self.pid}-{secrets.token_hex(4)}"
        self.started = time.time()
        self.study: optuna.Study | None = None
        self.on_beat: Callable[[], None] | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.beat_errors = 0  # heartbeats or sweeps the storage refused (retried at the next beat)

    def _record(self, **changes) -> DriverRecord:
        return DriverRecord(self.id, self.host, self.pid, self.started, time.time(), self.lease_s, self.heartbeat_s, **changes)

    def _write(self, record: DriverRecord) -> None:
        assert self.study is not None
        storage, study_id = optuna_internals.storage_of(self.study), optuna_internals.study_id(self.study)
        storage.set_study_system_attr(study_id, RECORD_PREFIX + self.id, record.as_attr())

    def start(self, study: optuna.Study) -> None:
        if self.study is not None:
            return
        self.study = study
        self._write(self._record())
        for name, step in (("heartbeat", lambda: self._write(self._record())), ("sweep", self._sweep)):
            thread = threading.Thread(target=self._every_beat, args=(step,), name=f"paretune-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _sweep(self) -> None:
        if self.on_beat is not None:
            self.on_beat()

    def _every_beat(self, step: Callable[[], None]) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                step()
            except Exception:  # noqa: BLE001 - a storage hiccup must not end the heartbeat
                self.beat_errors += 1

    def ordinal(self) -> int:
        """This driver's place among every driver the study has seen (by start, then id):
        distinct for drivers that start at the same moment, so their samplers differ."""
        assert self.study is not None
        drivers = records(optuna_internals.storage_of(self.study), optuna_internals.study_id(self.study))
        ordered = sorted(drivers.values(), key=lambda r: (r.started, r.driver_id))
        return next((i for i, r in enumerate(ordered) if r.driver_id == self.id), len(ordered))

    def claim(self, trial: optuna.Trial) -> None:
        """Mark a trial this driver just asked as its own."""
        trial.storage.set_trial_system_attr(optuna_internals.trial_id(trial), DRIVER_ATTR, self.id)

    def stop(self) -> None:
        if self.study is None or self._stop.is_set():
            return
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.heartbeat_s + 60)
        try:
            self._write(self._record(ended=time.time()))
        except Exception:  # noqa: BLE001 - the lease then simply expires
            pass


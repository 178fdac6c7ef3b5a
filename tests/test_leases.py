"""Drivers sharing one study, piece by piece on a real SQLite file (no Ray): leases and
who may reconcile what, the storage's budget across searchers, a tell that meets a
lock, a trial finished elsewhere, a storage that stays away, the named metrics and
`paretune studies`. tests/test_drivers.py runs the same with real driver processes."""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.core import outages
from search.core.spec import from_dict
from search.core.storage import open_storage, serialize_sqlite
from search.driver import lease, tell
from search.driver.launcher import open_study
from search.driver.searcher import AskTellSearcher, reconcile_running
from tests.conftest import ROOT, run_cli, tiny_spec_dict, write_toml

FINITE = {"accuracy": 0.9, "latency_ms": 1.0, "energy_mj": 2.0, "size_kb": 3.0}


def sqlite_url(tmp_path: Path, name: str = "s.db") -> str:
    return f"sqlite:///{tmp_path / name}"


def new_study(url: str, name: str = "shared") -> optuna.Study:
    storage = open_storage(url)
    serialize_sqlite(storage)
    return optuna.create_study(study_name=name, storage=storage, directions=["maximize", "minimize", "minimize"], load_if_exists=True)


def quiet_lease(study: optuna.Study, lease_s: float = 2000.0) -> lease.DriverLease:
    """A started lease whose threads do not beat during the test: the test moves the clock."""
    driver = lease.DriverLease(heartbeat_s=lease_s / 2, lease_s=lease_s)
    driver.start(study)
    return driver


def asked(study: optuna.Study, driver: lease.DriverLease | None, x: float = 0.5) -> optuna.Trial:
    """A RUNNING trial with param x (as a sampler would have set it) and its seed (set
    once its params are all chosen), claimed by `driver`."""
    trial = study.ask()
    study._storage.set_trial_param(trial._trial_id, "x", x, optuna.distributions.FloatDistribution(0.0, 1.0))
    trial.set_user_attr("seed", trial.number)
    if driver is not None:
        driver.claim(trial)
    return trial


def by_state(study: optuna.Study, state: TrialState) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(state,))


# --- leases: only the dead are reconciled ------------------------------------------


def test_live_drivers_trials_are_left_alone_expired_ones_fail_and_requeue_once(tmp_path):
    study = new_study(sqlite_url(tmp_path))
    a = quiet_lease(study, lease_s=2000)
    first = asked(study, a, x=0.25)
    beat = lease.records(study._storage, study._study_id)[a.id].heartbeat
    assert reconcile_running(study, now=beat + 1999) == 0  # within the lease: another driver must not touch it
    assert reconcile_running(study, own=a.id, now=beat + 300) == 0  # a driver never reconciles its own
    assert by_state(study, TrialState.RUNNING)[0].number == first.number

    heard = []
    assert reconcile_running(study, now=beat + 2001, on_reconciled=lambda t, what: heard.append((t.number, what))) == 1
    assert heard == [(first.number, heard[0][1])] and heard[0][1].endswith("; its params are queued again")
    failed = study._storage.get_trial(first._trial_id)
    assert failed.state == TrialState.FAIL
    assert "stopped heartbeating; lease of 2000 s expired 1 s ago" in failed.user_attrs["fail_reason"]
    assert f"{socket.gethostname()} pid" in failed.user_attrs["fail_reason"]
    (retry,) = by_state(study, TrialState.WAITING)
    assert retry.user_attrs["retry_of"] == first.number

    # The queued params run next; interrupted again, they are not queued a third time.
    again = study.ask()
    assert again.number == retry.number and again.suggest_float("x", 0.0, 1.0) == 0.25
    a.claim(again)
    heard.clear()
    assert reconcile_running(study, now=beat + 2001, on_reconciled=lambda t, what: heard.append(what)) == 1
    assert not heard[0].endswith("queued again")
    assert not by_state(study, TrialState.WAITING) and not by_state(study, TrialState.RUNNING)


def test_ended_drivers_trials_fail_at_once_and_unclaimed_ones_after_a_grace(tmp_path):
    study = new_study(sqlite_url(tmp_path))
    b = quiet_lease(study)
    left = asked(study, b)
    b.stop()  # ended without failing its trial (as if close() had been skipped)
    unclaimed = asked(study, None)  # from a driver older than leases, or not yet claimed
    assert reconcile_running(study) == 1
    assert "its driver" in study._storage.get_trial(left._trial_id).user_attrs["fail_reason"]
    assert study._storage.get_trial(unclaimed._trial_id).state == TrialState.RUNNING
    assert reconcile_running(study, now=time.time() + lease.UNCLAIMED_GRACE_S + 1) == 1
    assert "no driver claimed it" in study._storage.get_trial(unclaimed._trial_id).user_attrs["fail_reason"]


def test_heartbeat_thread_refreshes_the_record_and_sweeps(tmp_path):
    study = new_study(sqlite_url(tmp_path))
    driver = lease.DriverLease(heartbeat_s=0.2, lease_s=5)
    sweeps = []
    driver.on_beat = lambda: sweeps.append(time.time())
    driver.start(study)
    first = lease.records(study._storage, study._study_id)[driver.id]
    deadline = time.monotonic() + 20
    while len(sweeps) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    later = lease.records(study._storage, study._study_id)[driver.id]
    driver.stop()
    ended = lease.records(study._storage, study._study_id)[driver.id]
    assert len(sweeps) >= 3 and later.heartbeat > first.heartbeat
    assert (later.host, later.pid, later.lease_s) == (socket.gethostname(), driver.pid, 5)
    assert ended.ended is not None and not ended.alive()


def test_sqlite_reconcile_is_atomic_between_processes(tmp_path):
    # Three processes fail the same 40 RUNNING trials at the same instants: each trial
    # must be won by exactly one (pysqlite alone lets several "win": see serialize_sqlite).
    url = sqlite_url(tmp_path)
    study = new_study(url)
    for _ in range(40):
        study.ask()
    script = (
        "import sys, time, optuna; from search.driver import tell; from search.core.storage import open_storage, serialize_sqlite\n"
        "s = open_storage(sys.argv[1]); serialize_sqlite(s); study = optuna.load_study(study_name='shared', storage=s)\n"
        "ids = [t._trial_id for t in study.get_trials(deepcopy=False)]; start = float(sys.argv[2]); wins = 0\n"
        "for k, i in enumerate(ids):\n"
        "    while time.time() < start + 0.05 * k: pass\n"
        "    wins += tell.fail(study, i, 'raced')\n"
        "print(wins)\n"
    )
    start = time.time() + 5
    procs = [subprocess.Popen([sys.executable, "-c", script, url, str(start)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    wins = [int(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in procs]
    assert sum(wins) == 40, wins
    assert len(by_state(study, TrialState.FAIL)) == 40


# --- the budget is the storage's ----------------------------------------------------


def test_budget_counts_every_drivers_trials(tmp_path):
    url = sqlite_url(tmp_path)
    spec = from_dict(tiny_spec_dict(name="shared"))
    new_study(url)
    searchers = []
    for _ in range(2):  # two drivers: each its own storage connection, study object and lease
        study = optuna.load_study(study_name="shared", storage=open_storage(url))
        searchers.append(AskTellSearcher(study, spec, "image", budget=4, max_failed=10, driver=quiet_lease(study)))
    a, b = searchers
    assert all(isinstance(s.suggest(t), dict) for s, t in ((a, "a1"), (a, "a2"), (b, "b1"), (b, "b2")))
    assert b.suggest("b3") is None  # four RUNNING across the drivers fill the budget of 4
    a.on_trial_complete("a1", dict(FINITE))
    b.on_trial_complete("b1", {"fail_reason": "x"})  # a failure frees a slot for either driver
    assert isinstance(b.suggest("b3"), dict)
    for searcher, trial_id in ((a, "a2"), (b, "b2"), (b, "b3")):
        searcher.on_trial_complete(trial_id, dict(FINITE))
    assert a.suggest("a3") == AskTellSearcher.FINISHED and b.suggest("b4") == AskTellSearcher.FINISHED
    assert a.complete == b.complete == 4
    owners = {t.system_attrs[lease.DRIVER_ATTR] for t in a.study.get_trials()}
    assert owners == {a.driver.id, b.driver.id}


# --- no result is ever dropped ------------------------------------------------------


@pytest.fixture
def locked_sqlite(tmp_path, monkeypatch):
    """A study on a SQLite file whose connections wait only 0.2 s for a lock, and a way
    to hold the file's write lock from another connection for a while."""
    monkeypatch.setattr(outages, "RETRY_WAITS_S", (0.3,) * 8)
    path = tmp_path / "locked.db"
    storage = optuna.storages.RDBStorage(f"sqlite:///{path}", engine_kwargs={"connect_args": {"timeout": 0.2}})
    study = optuna.create_study(study_name="shared", storage=storage, directions=["maximize", "minimize", "minimize"])
    spec = from_dict(tiny_spec_dict(name="shared"))

    def hold(seconds: float) -> threading.Thread:
        holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN EXCLUSIVE")
        release = threading.Timer(seconds, holder.commit)
        release.start()
        return release

    return study, spec, storage, hold


def test_a_tell_that_meets_a_lock_is_retried(locked_sqlite, caplog):
    study, spec, storage, hold = locked_sqlite
    searcher = AskTellSearcher(study, spec, "image", budget=4, max_failed=4)
    searcher.suggest("t")
    (trial,) = searcher.live.values()
    release = hold(1.5)
    with pytest.raises(optuna.exceptions.StorageInternalError):  # the lock is real: a plain write fails
        storage.set_trial_user_attr(trial._trial_id, "probe", 1)
    with caplog.at_level(logging.WARNING, logger="search.driver.tell"):
        searcher.on_trial_complete("t", dict(FINITE))
    release.join()
    stored = study._storage.get_trial(trial._trial_id)
    assert stored.state == TrialState.COMPLETE and stored.values == [0.9, 1.0, 2.0]
    assert stored.user_attrs["size_kb"] == 3.0
    assert any("database is locked" in r.getMessage() and "retry 1" in r.getMessage() for r in caplog.records)
    assert searcher.told == 1 and searcher.unsaved_count == 0


def test_result_of_a_trial_failed_elsewhere_is_kept_in_a_new_trial(tmp_path):
    study = new_study(sqlite_url(tmp_path))
    spec = from_dict(tiny_spec_dict(name="shared"))
    told = []
    searcher = AskTellSearcher(study, spec, "image", budget=4, max_failed=4, driver=quiet_lease(study),
                               on_told=told.append)
    searcher.suggest("t")
    (trial,) = searcher.live.values()
    # Another driver decides this one's lease expired (e.g. it was suspended) ...
    assert reconcile_running(study, now=time.time() + 2100) == 1
    # ... and then its result arrives: no error, nothing lost.
    searcher.on_trial_complete("t", dict(FINITE))
    original, withdrawn, kept = study.get_trials()
    assert original.state == TrialState.FAIL and original.user_attrs["fail_reason"].startswith("interrupted")
    assert withdrawn.user_attrs["retry_of"] == original.number and withdrawn.state == TrialState.FAIL
    assert withdrawn.user_attrs["fail_reason"] == f"withdrawn: trial 0's own result was recorded as trial {kept.number}"
    assert kept.state == TrialState.COMPLETE and kept.values == [0.9, 1.0, 2.0]
    assert kept.params == original.params and kept.user_attrs["recorded_for"] == original.number
    assert kept.user_attrs["size_kb"] == 3.0 and [t.number for t in told] == [kept.number]


def test_unreachable_storage_keeps_the_result_for_the_next_launch(locked_sqlite, tmp_path, monkeypatch):
    study, spec, storage, hold = locked_sqlite
    monkeypatch.setenv("PARETUNE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(outages, "RETRY_WAITS_S", (0.1, 0.1))
    unsaved = tell.unsaved_path("shared", "sqlite:///locked.db")
    searcher = AskTellSearcher(study, spec, "image", budget=4, max_failed=4, unsaved=unsaved)
    searcher.suggest("t")
    (trial,) = searcher.live.values()
    release = hold(4.0)
    searcher.on_trial_complete("t", dict(FINITE))  # every attempt meets the lock: no exception
    assert searcher.unsaved_count == 1 and searcher.told == 0
    entry = json.loads(unsaved.read_text())
    assert entry["number"] == trial.number and entry["values"] == [0.9, 1.0, 2.0]
    assert "database is locked" in entry["error"] and "home/unsaved" in str(unsaved)
    release.join()
    assert tell.replay(study, unsaved) == 1 and not unsaved.exists()
    kept = by_state(study, TrialState.COMPLETE)
    assert [(t.values, t.user_attrs["recorded_for"]) for t in kept] == [([0.9, 1.0, 2.0], trial.number)]


# --- see the service ----------------------------------------------------------------


def test_studies_name_their_metrics(tmp_path):
    url = sqlite_url(tmp_path)
    spec = from_dict(tiny_spec_dict(name="named"))
    open_study(spec, open_storage(url))
    assert optuna.load_study(study_name="named", storage=url).metric_names == ["accuracy", "latency_ms", "energy_mj"]
    # A study created before names were set gets them on its next launch.
    optuna.create_study(study_name="older", storage=url, directions=spec.directions)
    assert optuna.load_study(study_name="older", storage=url).metric_names is None
    open_study(spec.model_copy(update={"name": "older"}), open_storage(url))
    assert optuna.load_study(study_name="older", storage=url).metric_names == ["accuracy", "latency_ms", "energy_mj"]


def test_studies_command_lists_objectives_states_and_live_drivers(tmp_path):
    url = sqlite_url(tmp_path)
    spec = from_dict(tiny_spec_dict(name="alpha"))
    driver = lease.DriverLease(heartbeat_s=1000, lease_s=2000)
    study, _ = open_study(spec, open_storage(url), driver=driver)
    for accuracy in (0.8, 0.9):
        study.tell(study.ask(), [accuracy, 1.0, 2.0])
    fail = study.ask()
    study.tell(fail, state=TrialState.FAIL)
    driver.claim(study.ask())  # one RUNNING trial of a live driver
    optuna.create_study(study_name="beta", storage=url, directions=["minimize"])  # no paretune metadata
    done = run_cli("studies", "--storage", url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"{url}: 2 studies"
    assert lines[1] == "alpha  accuracy max, latency_ms min, energy_mj min"
    assert lines[2] == "  trials   4: 2 COMPLETE, 1 RUNNING, 1 FAIL"
    assert lines[3].startswith(f"  drivers  1 live: {socket.gethostname()} pid {driver.pid} (heartbeat ")
    assert lines[3].endswith("s ago)")
    assert lines[4].startswith("  last     20") and lines[4].endswith("ago)")
    assert lines[5:8] == ["beta  objective_0 min", "  trials   0", "  drivers  0 live"]
    assert lines[8] == "  last     -"
    driver.stop()
    assert "0 live" in run_cli("studies", "--storage", url).stdout.splitlines()[3]
    empty = run_cli("studies", "--storage", sqlite_url(tmp_path, "empty.db"))
    assert empty.returncode == 0 and empty.stdout.strip().endswith("empty.db: 0 studies")


@pytest.mark.parametrize("env, message", [
    ({"PARETUNE_LEASE_S": "soon"}, "$PARETUNE_LEASE_S='soon': must be a number of seconds"),
    ({"PARETUNE_HEARTBEAT_S": "0"}, "$PARETUNE_HEARTBEAT_S='0': must be > 0"),
    ({"PARETUNE_HEARTBEAT_S": "30", "PARETUNE_LEASE_S": "40"}, "$PARETUNE_LEASE_S=40 must be at least twice $PARETUNE_HEARTBEAT_S=30"),
])
def test_bad_lease_settings_are_refused(monkeypatch, env, message):
    from search.core.errors import UsageError

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(UsageError) as error:
        lease.DriverLease()
    assert str(error.value) == message


def test_launch_refuses_bad_lease_settings_in_one_line_before_anything_starts(tmp_path):
    spec = write_toml(tmp_path / "s.toml", tiny_spec_dict(name="bad"))
    done = run_cli("launch", str(spec), "--storage", sqlite_url(tmp_path), env={"PARETUNE_HEARTBEAT_S": "30", "PARETUNE_LEASE_S": "40"})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == "error: $PARETUNE_LEASE_S=40 must be at least twice $PARETUNE_HEARTBEAT_S=30"
    assert not (tmp_path / "s.db").exists()  # the storage was not even opened

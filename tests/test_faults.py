"""Fault injection with real processes: kill -9 the driver mid-search and resume,
kill a trial worker, Ctrl-C, and bad objective values. No trial is ever lost or left
RUNNING, and a resumed search never re-runs or duplicates a COMPLETE trial."""

from __future__ import annotations

import functools
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import psutil
import pytest
from optuna.trial import TrialState

from search.core.spec import from_dict
from search.core.storage import open_storage
from search.driver import tell
from search.driver.searcher import AskTellSearcher, reconcile_running
from tests.conftest import ROOT, tiny_spec_dict, write_toml

BUDGET = 8
FAST = {"families": ["mlp"], "width": [8, 16], "depth": [1, 2]}


def fault_spec(tmp_path: Path, name: str, **budget) -> Path:
    # Early stopping off: these tests count what faults do to trials that run to the end
    # (a re-run stopped at a trusted rung would be PRUNED, not COMPLETE).
    data = tiny_spec_dict(name=name, budget={"trials": BUDGET, "concurrency": 2, "epochs": 2, "early_stopping": "none",
                                             **budget})
    data["space"]["architecture"] = FAST
    return write_toml(tmp_path / f"{name}.toml", data)


@functools.cache
def storage_for(url: str) -> optuna.storages.BaseStorage:
    """One storage per URL for this test process. The tests poll a study every 0.1 to
    0.3 s while a driver runs: opening the storage each time (an engine, Optuna's schema
    check) took 34 ms of CPU a look, reusing it 8 ms. Each `load_study` wraps it in a
    cache of its own, so no look sees an earlier look's trials."""
    return open_storage(url)


def states(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=storage_for(url)).get_trials(deepcopy=False)


# Short leases: a killed driver's trials may be reconciled a few seconds after it died.
SHORT_LEASE = {"PARETUNE_HEARTBEAT_S": "1", "PARETUNE_LEASE_S": "4"}


def start_driver(spec: Path, url: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    # Its own session, so killing the group takes the driver and the local Ray it started.
    return subprocess.Popen(
        [sys.executable, "-m", "search", "launch", str(spec), "--storage", url, *args],
        cwd=ROOT,
        env={**os.environ, **SHORT_LEASE, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_for(predicate, timeout: float = 240, every: float = 0.3) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except Exception:  # noqa: BLE001 - the study may not exist yet
            pass
        time.sleep(every)
    return False


def kill_group(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


# Kill points: while the first trials run (nothing COMPLETE yet), then after 2 and 4
# COMPLETE trials; each kill lands on a resume of the previous one. (At 5 of the budget
# of 8, a resume that began at 4 had one trial to go before the kill, and on a busy
# machine the kill point passed unseen: the driver finished.)
KILL_POINTS = [0, 2, 4]


@pytest.mark.ray
@pytest.mark.slow
def test_kill_driver_repeatedly_then_resume_converges(tmp_path):
    spec = fault_spec(tmp_path, "killed")
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    matrix = []
    for complete_at_kill in KILL_POINTS:
        proc = start_driver(spec, url)

        def own_running(trials) -> list:
            # Trials this driver runs (an earlier kill's may still be RUNNING until its
            # lease runs out and this driver reconciles them).
            mine = f"-{proc.pid}-"
            return [t for t in trials if t.state == TrialState.RUNNING and mine in t.system_attrs.get("paretune:driver", "")]

        def reached() -> bool:
            # One read per look: the moment to kill lasts a trial or two of a second or two.
            trials = states(url, "killed")
            complete = sum(t.state == TrialState.COMPLETE for t in trials)
            return complete >= complete_at_kill and bool(own_running(trials))

        # Stop looking once the driver has ended: it ran past the kill point unseen.
        assert wait_for(lambda: proc.poll() is not None or reached(), every=0.1) and proc.poll() is None, \
            proc.communicate()[0][-3000:]
        kill_group(proc)
        matrix.append((complete_at_kill, len(own_running(states(url, "killed")))))
    final = subprocess.run(
        [sys.executable, "-m", "search", "launch", str(spec), "--storage", url],
        cwd=ROOT, env={**os.environ, **SHORT_LEASE}, capture_output=True, text=True, timeout=600,
    )
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    assert "resuming" in final.stdout
    trials = states(url, "killed")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == BUDGET
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    # Every trial a kill left RUNNING is FAIL with the reason, reconciled once its
    # driver's lease ran out; its params were queued to run again (once).
    interrupted = [t for t in trials if t.state == TrialState.FAIL]
    # (A kill between asking a trial and claiming it leaves it unclaimed: failed too.)
    claimed = [t for t in interrupted if "no driver claimed it" not in t.user_attrs["fail_reason"]]
    assert len(claimed) == sum(running for _, running in matrix)
    assert all(t.user_attrs["fail_reason"].startswith("interrupted") for t in interrupted)
    retries = {t.user_attrs["retry_of"]: t for t in trials if "retry_of" in t.user_attrs}
    # (A kill in the middle of choosing a trial's params leaves no point to run again.)
    assert {t.number for t in interrupted if "retry_of" not in t.user_attrs and "seed" in t.user_attrs} <= set(retries)
    for t in interrupted:
        if t.number in retries:  # a retry is queued with its params (fixed_params)
            retry = retries[t.number]
            assert retry.system_attrs["fixed_params"] == t.params
            # What it ran with: all of them, or (a later kill stopped it while they were
            # being set) the first few, with the same values.
            assert retry.params.items() <= t.params.items()
            assert retry.state != TrialState.COMPLETE or retry.params == t.params
    assert all("retry_of" in t.user_attrs for t in trials if t.state == TrialState.WAITING)
    param_sets = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(param_sets)) == len(param_sets)
    # The front is computed from COMPLETE trials only.
    study = optuna.load_study(study_name="killed", storage=url)
    assert {t.number for t in study.best_trials} <= {t.number for t in complete}
    print("kill matrix (complete at kill, left RUNNING):", matrix)


def trial_actors(root: psutil.Process) -> list[psutil.Process]:
    """The Ray trial actors below `root` (their title starts with ray::ImplicitFunc)."""
    return [p for p in root.children(recursive=True) if p.name().startswith("ray::ImplicitFunc")]


def worker_pids() -> set[int]:
    """This test process's trial actors: its own descendants, so a trial of another
    test's Ray (pytest workers side by side) is never the one killed."""
    return {p.pid for p in trial_actors(psutil.Process())}


@pytest.mark.ray
@pytest.mark.solo  # beside other tests, four short trials once ended before the killer saw one run
def test_killed_worker_is_retried_and_the_search_completes(ray_local, tmp_path):
    from search.driver.launcher import launch

    spec = from_dict(tiny_spec_dict(name="worker-kill", budget={"trials": 4, "concurrency": 2, "epochs": 4, "max_retries": 1}))
    url = f"sqlite:///{tmp_path / 'w.db'}"
    killed: list[int] = []

    storage_for(url)  # create the schema before the watcher thread reads it

    def killer() -> None:
        def running() -> bool:
            return any(t.state == TrialState.RUNNING for t in states(url, "worker-kill")) and bool(worker_pids())

        if wait_for(running, timeout=120, every=0.1):
            time.sleep(0.5)  # inside a trial's training
            pid = sorted(worker_pids())[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    summary = launch(spec, storage_url=url)
    thread.join(timeout=5)
    assert killed, "no trial worker was found to kill"
    trials = states(url, "worker-kill")
    assert summary.complete == 4
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    # The killed trial was retried by Ray (max_retries=1) and ended COMPLETE or FAIL.
    assert all(t.state in (TrialState.COMPLETE, TrialState.FAIL) for t in trials)


# Ctrl-C, and what a time limit, a preemption or a closed terminal sends: each to the
# driver's whole process group, as a terminal, `timeout` or `ray job stop` does.
STOPS = [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)]


@pytest.mark.ray
@pytest.mark.parametrize("signum,code", STOPS, ids=[signal.Signals(s).name for s, _ in STOPS])
def test_a_stop_signal_stops_cleanly_and_says_how_to_resume(tmp_path, signum, code):
    name = f"stop{signum}"
    spec = fault_spec(tmp_path, name, trials=30)
    url = f"sqlite:///{tmp_path / 'c.db'}"
    proc = start_driver(spec, url)
    assert wait_for(lambda: sum(t.state == TrialState.COMPLETE for t in states(url, name)) >= 1)
    ray_processes = psutil.Process(proc.pid).children(recursive=True)  # the local Ray, its workers
    assert ray_processes
    os.killpg(proc.pid, signum)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == code, output[-3000:]
    assert "resume with:" in output and "paretune launch" in output
    trials = states(url, name)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    complete = sum(t.state == TrialState.COMPLETE for t in trials)
    assert complete >= 1
    stopped = [t for t in trials if t.state == TrialState.FAIL]
    assert stopped and all(t.user_attrs["fail_reason"].startswith("interrupted") for t in stopped)
    # The summary counts what the run stored, the interrupted trials included (they are FAIL).
    stored = complete + len(stopped)
    assert f"this run stored {stored} trial{'s' if stored != 1 else ''} in " in output, output[-3000:]
    assert f": {complete} COMPLETE, {len(stopped)} FAIL ({len(stopped)} interrupted)" in output
    what = "" if signum == signal.SIGINT else f" on {signal.Signals(signum).name}"
    assert f"stopping{what}: trials still running will be stored as FAIL (interrupted)" in output
    assert "Tuner.restore" not in output and "checkpoint" not in output
    assert "received at time" not in output and "rpc_client" not in output  # no signal dump, no Ray errors
    # The local Ray is gone with the driver, not left to a reaper.
    gone, alive = psutil.wait_procs(ray_processes, timeout=5)
    assert not alive, [p.pid for p in alive]
    # The next launch runs the points the stop cut short, once each.
    study = optuna.load_study(study_name=name, storage=url)
    assert tell.requeue_interrupted(study) == len(stopped)
    assert tell.requeue_interrupted(study) == 0
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert sorted(t.user_attrs["retry_of"] for t in waiting) == [t.number for t in stopped]
    assert [t.system_attrs["fixed_params"] for t in waiting] == [t.params for t in stopped]


# --- bad values reported by a trial -------------------------------------------------

FINITE = {"accuracy": 0.9, "latency_ms": 1.0, "energy_mj": 2.0, "size_kb": 3.0}
BAD_RESULTS = [
    ("nan", {**FINITE, "latency_ms": float("nan")}, "latency_ms is not finite"),
    ("inf", {**FINITE, "energy_mj": float("inf")}, "energy_mj is not finite"),
    ("-inf", {**FINITE, "accuracy": float("-inf")}, "accuracy is not finite"),
    ("none", {**FINITE, "accuracy": None}, "accuracy missing"),
    ("missing", {"accuracy": 0.9}, "latency_ms missing"),
    ("not-a-number", {**FINITE, "latency_ms": "fast"}, "not a number"),
    ("raised", {"fail_reason": "ValueError: boom"}, "ValueError: boom"),
    ("empty", {}, "no result reported"),
]


@pytest.fixture
def searcher():
    spec = from_dict(tiny_spec_dict(name="values"))
    study = optuna.create_study(directions=spec.directions)
    return AskTellSearcher(study, spec, "image", budget=20, max_failed=20)


@pytest.mark.parametrize("label,result,reason", BAD_RESULTS, ids=[b[0] for b in BAD_RESULTS])
def test_bad_values_become_fail_with_reason(searcher, label, result, reason):
    config = searcher.suggest("t1")
    assert set(config) == {"params", "seed", "number"}
    searcher.on_trial_complete("t1", result)
    (trial,) = searcher.study.get_trials()
    assert trial.state == TrialState.FAIL
    assert reason in trial.user_attrs["fail_reason"]
    assert searcher.failed == 1 and searcher.complete == 0


def test_worker_error_is_fail_and_finite_values_complete(searcher):
    searcher.suggest("a"), searcher.suggest("b")
    searcher.on_trial_complete("a", None, error=True)
    searcher.on_trial_complete("b", dict(FINITE))
    failed, done = searcher.study.get_trials()
    assert failed.state == TrialState.FAIL and "worker failed" in failed.user_attrs["fail_reason"]
    assert done.state == TrialState.COMPLETE and done.values == [0.9, 1.0, 2.0]
    assert done.user_attrs["size_kb"] == 3.0


def test_close_fails_live_trials_and_the_next_launch_queues_their_params(searcher):
    searcher.suggest("a"), searcher.suggest("b")
    assert searcher.close() == 2
    failed = searcher.study.get_trials(states=(TrialState.FAIL,))
    # No other driver runs the study: nothing is left WAITING; the next launch queues them.
    assert not searcher.study.get_trials(states=(TrialState.WAITING,))
    assert tell.requeue_interrupted(searcher.study) == 2
    queued = searcher.study.get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs["retry_of"] for t in queued] == [t.number for t in failed] == [0, 1]
    assert [t.system_attrs["fixed_params"] for t in queued] == [t.params for t in failed]
    assert all(t.user_attrs["fail_reason"].startswith("interrupted") for t in failed)
    # Nothing of a driver that is gone is left: an unclaimed RUNNING trial older than a lease.
    searcher.study.ask()
    searcher.study.ask()
    searcher.study.ask()
    assert reconcile_running(searcher.study, now=time.time() + 3600) == 3
    assert not searcher.study.get_trials(states=(TrialState.RUNNING,))


def test_budget_counts_complete_trials_and_failures_free_slots(searcher):
    searcher.budget = 2
    searcher.suggest("a"), searcher.suggest("b")
    assert searcher.suggest("c") is None  # two in flight fill the budget
    searcher.on_trial_complete("a", {"fail_reason": "x"})
    assert isinstance(searcher.suggest("c"), dict)  # the failure freed a slot
    searcher.on_trial_complete("b", dict(FINITE)), searcher.on_trial_complete("c", dict(FINITE))
    assert searcher.suggest("d") == AskTellSearcher.FINISHED
    assert searcher.complete == 2 and math.isclose(searcher.study.best_trials[0].values[0], 0.9)

"""Several real drivers on one study, each its own process:

- two `python -m search launch` on one SQLite study, the second started while the
  first runs: both keep running, neither fails the other's trial, the budget holds;
- 8 drivers on PostgreSQL and 4 on SQLite (trials of one second through the real
  launch path; a shared loopback Ray cluster), one of them killed with SIGKILL while
  the others run: its trials are reconciled only after its lease ran out, no result
  is lost, nothing is left RUNNING, trial numbers are unique, the budget holds;
- kill -9 of a driver that started a local Ray: no process of that Ray session is
  left behind.

Each test prints its figures (pytest -s shows them).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.driver import lease
from tests.conftest import ROOT, run_cli, tiny_spec_dict, write_toml
from tests.raycluster import loopback_cluster
from tests.test_faults import FAST, start_driver, storage_for, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage_for(url))  # polled: one storage per URL


def owned_by(trial: optuna.trial.FrozenTrial, pid: int) -> bool:
    return trial.system_attrs.get(lease.DRIVER_ATTR, "").startswith(f"{socket.gethostname()}-{pid}-")


def test_two_cli_drivers_share_one_sqlite_study(tmp_path):
    # Small CNNs: several seconds a trial, so the first driver is still at it when the
    # second (a minute's start-up on a busy machine) opens the study.
    data = tiny_spec_dict(name="pair", budget={"trials": 8, "concurrency": 1, "epochs": 20})
    data["space"]["architecture"] = {"families": ["cnn"], "width": [16, 32], "depth": [1, 2]}
    spec = write_toml(tmp_path / "pair.toml", data)
    url = f"sqlite:///{tmp_path / 'pair.db'}"

    def live_drivers() -> int:
        study = load(url, "pair")
        return len([r for r in lease.records(study._storage, study._study_id).values() if r.alive()])

    first = start_driver(spec, url, env={"PARETUNE_LEASE_S": "20"})
    assert wait_for(lambda: live_drivers() == 1), first.communicate()[0][-3000:]
    second = start_driver(spec, url, env={"PARETUNE_LEASE_S": "20"})  # opens the study while trials run
    both_live = lambda: live_drivers() == 2  # noqa: E731

    seen_both = wait_for(both_live, timeout=120)
    listing = run_cli("studies", "--storage", url).stdout if seen_both else ""
    outputs = [p.communicate(timeout=600)[0] for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert seen_both and "drivers  2 live" in listing, listing
    assert not any("Traceback" in out or "UpdateFinishedTrialError" in out for out in outputs), outputs
    study = load(url, "pair")
    trials = study.get_trials()
    counts = Counter(t.state.name for t in trials)
    # Neither driver failed the other's live trial (before leases the second marked the
    # first's RUNNING trial FAIL, and the first lost its result); together they stopped
    # within budget <= COMPLETE <= budget + total concurrency - 1 (= 8 + 1).
    assert counts["FAIL"] == 0 and counts["RUNNING"] == 0
    assert 8 <= counts["COMPLETE"] <= 9
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    told = [int(re.search(r"this run stored (\d+) trials? in", out).group(1)) for out in outputs]
    # Stored = COMPLETE + PRUNED (early stopping, on by default, may stop a trial at a trusted rung).
    assert all(n >= 1 for n in told) and sum(told) == counts["COMPLETE"] + counts["PRUNED"], told
    assert {owned_by(t, first.pid) for t in trials} == {True, False}
    assert study.metric_names == ["accuracy", "latency_ms", "energy_mj"]
    print(f"\n2 drivers on SQLite, budget 8: COMPLETE {counts['COMPLETE']}, FAIL {counts['FAIL']}, "
          f"RUNNING {counts['RUNNING']}, told by each {told}")


# --- many drivers, one killed --------------------------------------------------------

LEASE_ENV = {"PARETUNE_HEARTBEAT_S": "1", "PARETUNE_LEASE_S": "5"}


@pytest.fixture(scope="module")
def shared_ray():
    """One loopback Ray cluster the drivers join (a local Ray each would not fit 2 cores)."""
    cluster = loopback_cluster()
    try:
        cluster.start_head(cpus=16)
        cluster.wait_for_nodes(1)
        yield cluster
    finally:
        cluster.stop()


def start_drivers(count: int, url: str, name: str, budget: int, log: Path, cluster, seconds: int) -> list[subprocess.Popen]:
    """`count` drivers on one study, each running trials of `seconds`."""
    env = {**os.environ, **cluster.env(), **LEASE_ENV}
    command = [sys.executable, "-m", "tests.drivers", "--storage", url, "--name", name, "--trials", str(budget),
               "--concurrency", "2", "--seconds", str(seconds), "--log", str(log), "--address", cluster.address]
    return [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True) for _ in range(count)]


@pytest.mark.cluster
@pytest.mark.parametrize("backend, drivers", [pytest.param("postgresql", 8, marks=pytest.mark.postgres), ("sqlite", 4)])
def test_many_drivers_one_killed(backend, drivers, shared_ray, tmp_path, request):
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else f"sqlite:///{tmp_path / 'many.db'}"
    name, budget, log = f"many-{backend}", 60, tmp_path / "results.jsonl"
    # The driver the test kills starts first and runs trials of 15 s, the others of 1 s:
    # it holds RUNNING trials all along, and the others still have most of the budget to
    # run when it is killed, so they outlive its lease and reconcile its trials. (All
    # started at once on a busy machine, the victim's first trial could start so late
    # that the others finished within its heartbeat grace and left its trial RUNNING.)
    (victim,) = start_drivers(1, url, name, budget, log, shared_ray, seconds=15)
    # One storage for every poll, as a user's script would hold: a storage opened per poll
    # keeps its connection until garbage collection, and a few hundred of them exhaust
    # PostgreSQL's 100 connections, which the drivers then meet as an outage.
    polled: list[optuna.Study] = []

    def trials_now() -> list[optuna.trial.FrozenTrial]:
        if not polled:
            polled.append(load(url, name))  # raises until the victim has created the study
        return polled[0].get_trials(deepcopy=False)

    def victim_runs_a_trial(trials: list[optuna.trial.FrozenTrial]) -> bool:
        return any(t.state == TrialState.RUNNING and owned_by(t, victim.pid) for t in trials)

    assert wait_for(lambda: victim_runs_a_trial(trials_now()), timeout=300), victim.communicate()[0][-3000:]
    procs = [victim, *start_drivers(drivers - 1, url, name, budget, log, shared_ray, seconds=1)]

    def others_complete_trials() -> bool:
        trials = trials_now()
        return sum(t.state == TrialState.COMPLETE for t in trials) >= 4 and victim_runs_a_trial(trials)

    assert wait_for(others_complete_trials, timeout=300), victim.communicate()[0][-3000:]
    killed_at = time.time()
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    outputs = [p.communicate(timeout=600)[0] for p in procs[1:]]
    assert [p.returncode for p in procs[1:]] == [0] * (drivers - 1), "\n".join(o[-2000:] for o in outputs)
    tracebacks = [out[out.index("Traceback"):][:3000] for out in outputs if "Traceback" in out]
    assert not tracebacks, tracebacks

    study = polled[0]
    trials = study.get_trials()
    counts = Counter(t.state.name for t in trials)
    assert sorted(t.number for t in trials) == list(range(len(trials)))  # no duplicate trial numbers
    running = [(t.number, "killed driver's" if owned_by(t, victim.pid) else t.system_attrs.get(lease.DRIVER_ATTR, "unclaimed"),
                f"started {t.datetime_start.timestamp() - killed_at:+.1f} s from the kill", dict(t.user_attrs))
               for t in trials if t.state == TrialState.RUNNING]
    assert not running, (running, [out.strip().splitlines()[-1][:400] for out in outputs])
    assert budget <= counts["COMPLETE"] <= budget + 2 * drivers - 1

    # Only the killed driver's trials failed, and only after its lease had run out.
    killed = next(r for r in lease.records(study._storage, study._study_id).values() if r.pid == victim.pid)
    # (A kill between asking a trial and claiming it leaves it unclaimed: failed too.)
    failed = [t for t in trials if t.state == TrialState.FAIL and "no driver claimed it" not in t.user_attrs["fail_reason"]]
    assert failed and all(owned_by(t, victim.pid) for t in failed)
    assert all("lease of 5 s expired" in t.user_attrs["fail_reason"] for t in failed)
    assert all(t.datetime_complete.timestamp() >= killed.heartbeat + killed.lease_s for t in failed)
    retried = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
    # Each one's params queued again (unless the kill came while they were being chosen).
    assert {t.number for t in failed if "seed" in t.user_attrs} <= retried

    # Every result a live driver received is stored: as its trial, or recorded for it.
    results = [json.loads(line) for line in log.read_text().splitlines()]
    stored = {(t.user_attrs.get("recorded_for", t.number), tuple(t.values)) for t in trials if t.state == TrialState.COMPLETE}
    lost = [r for r in results if r["driver"] != victim.pid and (r["number"], tuple(r["values"])) not in stored]
    assert not lost
    told = [json.loads(out.strip().splitlines()[-1])["told_this_run"] for out in outputs]
    assert sum(1 for n in told if n) >= 2  # the work was shared
    print(f"\n{drivers} drivers on {backend}, budget {budget}, one killed: COMPLETE {counts['COMPLETE']}, "
          f"FAIL {counts['FAIL']} (the killed driver's, reconciled after its lease), RUNNING {counts['RUNNING']}, "
          f"WAITING {counts['WAITING']}, lost {len(lost)} of {len(results)} results, told by survivors {told}")


# --- nothing left behind --------------------------------------------------------------


def process_tree(root: int) -> dict[int, int]:
    """pid -> start time of `root` and all its descendants."""
    from search.driver.ray_reaper import start_time

    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, grew = {root}, True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= children
        grew = bool(children)
    return {pid: start for pid in tree if (start := start_time(pid)) is not None}


def test_killed_driver_leaves_no_ray_process(tmp_path):
    data = tiny_spec_dict(name="orphans", budget={"trials": 20, "concurrency": 2, "epochs": 4})
    data["space"]["architecture"] = FAST
    spec = write_toml(tmp_path / "orphans.toml", data)
    url = f"sqlite:///{tmp_path / 'o.db'}"
    driver = start_driver(spec, url)
    assert wait_for(lambda: load(url, "orphans").get_trials(states=(TrialState.RUNNING,))), driver.communicate()[0][-3000:]
    # The driver's local Ray: GCS, raylet, dashboard, monitors, two agents (they outlived
    # a killed driver before), the trial workers; and the watcher.
    tree = process_tree(driver.pid)
    assert len(tree) >= 9, {pid: _cmdline(pid) for pid in tree}
    os.kill(driver.pid, signal.SIGKILL)  # the driver alone, as `kill -9 PID` does
    driver.wait()

    from search.driver.ray_reaper import start_time

    def left() -> list[int]:
        return [pid for pid, started in tree.items() if start_time(pid) == started]

    try:
        wait_for(lambda: not left(), timeout=60, every=0.5)
        survivors = {pid: _cmdline(pid) for pid in left()}
        assert not survivors, survivors
        print(f"\nkill -9 of a driver with a local Ray: {len(tree)} processes in its tree, {len(survivors)} left")
    finally:
        for pid in left():  # never leak them into the rest of the test session
            os.kill(pid, signal.SIGKILL)


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes()[:120].replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""

"""What a user reads when a fault hits a search: one paretune line each, from real faults.

- A storage that goes away (a PostgreSQL server stopped for a few seconds mid-search):
  `storage unreachable (CAUSE): retry N in W s; K results held, none lost`, on stderr,
  never Python's `WARNING:search.core.outages:` form.
- A worker node lost (its raylet and trial workers killed mid-trial, on a 2-node
  loopback cluster):
  `node HOST lost: trial N re-runs elsewhere; its Ray logs: DIR`, without Ray's
  `(raylet)` dump of that node's log tail, and the search completes.
- A cluster that refuses the driver's token: exit 2 within 10 s, one line naming the
  token file, no Ray warnings.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import optuna
import psutil
import pytest
import sqlalchemy.exc
from optuna.trial import TrialState

from search.core import outages
from search.core.storage import open_storage
from search.driver import cluster
from search.driver.node_loss import lost_line
from tests.conftest import ROOT, _pg_bin, run_cli, tiny_spec_dict, write_toml
from tests.raycluster import loopback_cluster
from tests.test_faults import FAST, SHORT_LEASE, kill_group, start_driver, states, trial_actors, wait_for

RETRY_LINE = re.compile(
    r"^storage unreachable \((?P<cause>.+?)\): retry \d+ in [\d.]+ s; (?:\d+ results? held, none lost|no results held)$",
    re.M,
)


def _spec(tmp_path: Path, name: str, **budget) -> Path:
    data = tiny_spec_dict(name=name, budget={"trials": 6, "concurrency": 2, "epochs": 2, "early_stopping": "none", **budget})
    data["space"]["architecture"] = FAST
    return write_toml(tmp_path / f"{name}.toml", data)


# --- the lines themselves ----------------------------------------------------------


def _operational(message: str) -> sqlalchemy.exc.OperationalError:
    """A driver error as SQLAlchemy raises it (the database's message in `orig`)."""
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception(message))


CAUSES = [
    ('connection to server at "127.0.0.1", port 5432 failed: Connection refused\n\tIs the server running', "connection refused"),
    ("database is locked", "database is locked"),
    ("server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally",
     "server closed the connection"),
    ("terminating connection due to administrator command", "server closed the connection"),
    ("the database system is starting up", "server starting up"),
    ('connection to server at "db", port 5432 failed: timeout expired', "timeout"),
    ('could not translate host name "db" to address', "host not found"),
    ("something new\nand its details", "OperationalError: something new"),
]


@pytest.mark.parametrize("message,phrase", CAUSES, ids=[p for _, p in CAUSES])
def test_a_storage_failure_is_said_in_a_few_words(message, phrase):
    assert outages.cause(_operational(message)) == phrase
    # Optuna wraps a failed commit: the cause under it is what is said.
    wrapped = optuna.exceptions.StorageInternalError("An exception is raised during the commit")
    wrapped.__cause__ = _operational(message)
    assert outages.cause(wrapped) == phrase


def test_a_connection_dropped_inside_a_transaction_is_said_as_the_server_closing_it():
    # Met by a thread sharing the session before the rollback (seen with PostgreSQL
    # stopped mid-search); Optuna wraps it as a failed commit.
    pending = sqlalchemy.exc.PendingRollbackError(
        "Can't reconnect until invalid transaction is rolled back.  Please rollback() fully before proceeding")
    wrapped = optuna.exceptions.StorageInternalError("An exception is raised during the commit")
    wrapped.__cause__ = pending
    assert outages.is_transient(wrapped)
    assert outages.cause(wrapped) == outages.cause(pending) == "server closed the connection"


def test_the_retry_line_counts_the_results_held():
    refused = _operational("Connection refused")
    assert outages.retry_line(refused, 7, 30.0, 2) == "storage unreachable (connection refused): retry 7 in 30 s; 2 results held, none lost"
    assert outages.retry_line(refused, 1, 0.5, 1).endswith("retry 1 in 0.5 s; 1 result held, none lost")
    assert outages.retry_line(refused, 1, 0.5, 0).endswith("; no results held")


def test_a_real_retry_logs_the_line_with_what_the_searchers_hold(tmp_path, caplog):
    """A real transient fault (a file that appears only after the first attempt) and two
    holders (searchers) of 2 and 1 results: the line sums them; a holder gone is not counted."""
    path = tmp_path / "late"
    attempts = []

    def call() -> str:
        attempts.append(time.monotonic())
        if len(attempts) == 2:
            return path.read_text()
        path.write_text("here")
        return (tmp_path / "missing" / "file").read_text()  # FileNotFoundError, an OSError

    with outages.holding(lambda: 2), outages.holding(lambda: 1):
        assert outages.retrying(call) == "here"
    (record,) = [r for r in caplog.records if r.name == "search.core.outages"]
    assert record.getMessage() == (
        f"storage unreachable (FileNotFoundError: [Errno 2] No such file or directory: '{tmp_path / 'missing' / 'file'}'): "
        "retry 1 in 0.5 s; 3 results held, none lost"
    )
    assert not outages._holders


def test_calls_failing_together_say_it_once(tmp_path, caplog):
    """Two storage calls meeting one fault at once (a tell, a count) give one line."""
    path = tmp_path / "late"
    with ThreadPoolExecutor(max_workers=2) as pool:
        calls = [pool.submit(outages.retrying, path.read_text) for _ in range(2)]  # FileNotFoundError until it exists
        time.sleep(0.2)
        path.write_text("here")
        assert [call.result() for call in calls] == ["here", "here"]
    assert len([r for r in caplog.records if r.name == "search.core.outages"]) == 1


def test_the_token_hint_names_where_the_token_came_from(monkeypatch, tmp_path):
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    assert cluster.token_source() == str(cluster.TOKEN_PATH)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "token"))
    assert cluster.token_source() == str(tmp_path / "token")
    assert cluster.refused_token_hint(str(tmp_path / "token"), True) == (
        f"the cluster refused the token in {tmp_path / 'token'}: set RAY_AUTH_TOKEN_PATH to the cluster's token file, "
        f"or copy it to {cluster.TOKEN_PATH}"
    )
    monkeypatch.setenv("RAY_AUTH_TOKEN", "abc")  # Ray reads the variable before any file
    assert cluster.token_source() == "RAY_AUTH_TOKEN"
    assert "refused the token in RAY_AUTH_TOKEN: set it to the cluster's token" in cluster.refused_token_hint("RAY_AUTH_TOKEN", True)
    assert "set RAY_AUTH_MODE=token" in cluster.refused_token_hint("RAY_AUTH_TOKEN", False)


def test_the_node_line_names_the_trial_and_the_logs():
    assert lost_line("10.0.0.5", 4, "/tmp/ray/session_1/logs", True) == (
        "node 10.0.0.5 lost: trial 4 re-runs elsewhere; its Ray logs: /tmp/ray/session_1/logs"
    )
    assert "trial 4 had no retries left (budget.max_retries): stored FAIL" in lost_line("h", 4, "d", False)


# --- a stopped PostgreSQL server ---------------------------------------------------


def _data_dir(storage: optuna.storages.RDBStorage) -> Path:
    """The data directory of the `postgres_url` fixture's server, as it reports it."""
    with storage.engine.connect() as connection:
        return Path(connection.exec_driver_sql("SHOW data_directory").scalar())


def _pg_ctl(data: Path, *args: str) -> None:
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # as the fixture runs it
    done = subprocess.run([*as_user, str(_pg_bin() / "pg_ctl"), "-D", str(data), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def _complete(storage: optuna.storages.BaseStorage, name: str) -> int:
    return len(optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _killed(proc: subprocess.Popen) -> str:
    """The end of a driver's output, once it is killed (for a failed assertion)."""
    kill_group(proc)
    return proc.stdout.read()[-3000:]


@pytest.mark.ray
@pytest.mark.postgres
@pytest.mark.slow
def test_a_stopped_postgresql_is_said_as_retries_and_the_search_completes(tmp_path, postgres_url):
    storage = open_storage(postgres_url)
    data = _data_dir(storage)
    # The fixture's own server options: its socket directory is the data directory's parent.
    options = f"-h 127.0.0.1 -p {urlparse(postgres_url).port} -k {data.parent} -c fsync=off"
    # 12 trials: the outage ends well before the search does (it is about the retries,
    # not about the last calls of a launch).
    proc = subprocess.Popen(  # start_driver's, with stderr apart: the retry lines go there
        [sys.executable, "-m", "search", "launch", str(_spec(tmp_path, "pgdown", trials=12)), "--storage", postgres_url],
        cwd=ROOT, env={**os.environ, **SHORT_LEASE}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    try:
        assert wait_for(lambda: _complete(storage, "pgdown") >= 1, timeout=120), _killed(proc)
        _pg_ctl(data, "-m", "immediate", "-w", "stop")
        try:
            time.sleep(6)  # retries 1-3 (after 0.5, 1 and 2 s) fail; the 4th comes 4 s later
        finally:
            _pg_ctl(data, "-o", options, "-l", str(data.parent / "log"), "-w", "start")
        output, errors = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            kill_group(proc)
    assert proc.returncode == 0, output[-3000:] + errors[-3000:]
    found = list(RETRY_LINE.finditer(errors))
    print("\n".join(m.group(0) for m in found))
    assert found and not RETRY_LINE.search(output), errors[-3000:]
    assert {m.group("cause") for m in found} <= {"connection refused", "server closed the connection", "server shutting down"}
    assert "WARNING:search" not in output + errors and "storage call failed" not in output + errors
    assert _complete(storage, "pgdown") == 12


# --- a Ray cluster: a node lost, a token refused -------------------------------------


@pytest.fixture(scope="module")
def two_nodes():
    """A loopback cluster (token auth on): the head and a worker, 1 CPU each."""
    nodes = loopback_cluster()
    try:
        nodes.start_head(cpus=1)
        nodes.start_worker("worker", cpus=1)
        nodes.wait_for_nodes(2)
        yield nodes
    finally:
        nodes.stop()


@pytest.mark.ray
@pytest.mark.cluster
@pytest.mark.slow
def test_a_refused_token_stops_the_launch_at_once_with_one_line(two_nodes, tmp_path):
    wrong = tmp_path / "other_token"
    wrong.write_text("0" * 64)
    spec = _spec(tmp_path, "token")
    started = time.monotonic()
    done = run_cli("launch", str(spec), "--address", two_nodes.address, "--storage", f"sqlite:///{tmp_path / 't.db'}",
                   env={**two_nodes.env(), "RAY_AUTH_TOKEN_PATH": str(wrong)}, timeout=120)
    took = time.monotonic() - started
    print(f"refused token: exit {done.returncode} after {took:.1f} s (the whole command: imports and preflight included)")
    print(done.stderr)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stderr.splitlines() == [
        f"error: --address {two_nodes.address}: the cluster refused the token in {wrong}: "
        f"set RAY_AUTH_TOKEN_PATH to the cluster's token file, or copy it to {cluster.TOKEN_PATH}"
    ]
    assert "InvalidAuthToken" not in done.stdout + done.stderr
    assert took < 10


def _raylet(node_dir: Path) -> psutil.Process:
    """The raylet of the loopback node whose temp dir is `node_dir`."""
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if "/raylet/raylet " in cmdline and f"{node_dir}/" in cmdline:
            return process
    raise AssertionError(f"no raylet for {node_dir}")


def _training(raylet: psutil.Process) -> bool:
    """A trial actor of this raylet is busy: 6% of a core or more over half a second.
    (An actor kept for reuse idles below 1%; a training one shares 2 cores with every
    process of the tests beside it, and under a dozen drivers got less than a fifth.)"""
    actors = trial_actors(raylet)
    before = [sum(p.cpu_times()[:2]) for p in actors]
    time.sleep(0.5)
    return any(sum(p.cpu_times()[:2]) - cpu > 0.03 for p, cpu in zip(actors, before))


@pytest.mark.ray
@pytest.mark.cluster
@pytest.mark.slow
def test_a_lost_node_is_one_line_and_its_trial_runs_elsewhere(two_nodes, tmp_path):
    url = f"sqlite:///{tmp_path / 'node.db'}"
    spec = _spec(tmp_path, "nodelost", trials=6, epochs=6, max_retries=2)
    raylet = _raylet(two_nodes.root / "worker")
    proc = start_driver(spec, url, "--address", two_nodes.address, env=two_nodes.env())
    try:
        assert wait_for(lambda: _training(raylet), timeout=120, every=0.1), _killed(proc)
        # The node dies: its raylet and the trials on it (a worker outliving its raylet
        # may still finish its trial). Its agents live on to report the raylet's death.
        actors = trial_actors(raylet)
        raylet.send_signal(signal.SIGKILL)
        for actor in actors:
            actor.send_signal(signal.SIGKILL)
        output, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            kill_group(proc)
    assert proc.returncode == 0, output[-3000:]
    lost = re.findall(r"^node (\S+) lost: trial (\d+) re-runs elsewhere; its Ray logs: (\S+)$", output, re.M)
    print("\n".join(line for line in output.splitlines() if " lost: " in line))
    assert lost, output[-3000:]
    assert all(logs.startswith(f"{two_nodes.root / 'worker'}/session_") and logs.endswith("/logs") for _, _, logs in lost)
    assert "(raylet)" not in output and "Raylet is terminated" not in output and "Trial task failed" not in output
    trials = states(url, "nodelost")
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 6
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    # The re-run trial is the same Optuna trial: it ended COMPLETE, or FAIL with its reason
    # (a re-run Ray placed on the dead node before the GCS marked it dead fails again).
    assert all(trials[int(number)].state in (TrialState.COMPLETE, TrialState.FAIL) for _, number, _ in lost)

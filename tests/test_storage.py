"""The same small search with its trials kept on a real PostgreSQL server and in
Optuna's JournalStorage file (the shared-filesystem backend): every trial lands
COMPLETE, readable by plain Optuna, and a second launch resumes instead of rerunning.

The PostgreSQL server is a throwaway one started here (initdb + pg_ctl in a temp dir,
TCP on 127.0.0.1 only, password auth); the test is skipped, saying why, only where no
PostgreSQL binaries are installed (`.ci/run` installs them on CI).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.launcher import launch
from search.spec import from_dict
from search.storage import SQLITE_TIMEOUT_S, open_storage
from tests.conftest import tiny_spec_dict
from tests.raycluster import free_port


def _pg_bin() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True) + [
        str(Path(p).parent) for p in filter(None, [shutil.which("initdb")])
    ]:
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    return None


@pytest.fixture(scope="module")
def postgres_url():
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl) installed; .ci/run installs them with CI=true")
    # initdb refuses to run as root: as root, run the server as the `postgres` user.
    as_user: list[str] = []
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run the server as")
        as_user = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="paretune-pg-"))
    password = secrets.token_hex(16)
    (root / "pw").write_text(password)
    if owner is not None:
        for path in (root, root / "pw"):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    port = free_port()
    run = lambda *args: subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=120)  # noqa: E731
    done = run(str(bin_dir / "initdb"), "-D", str(root / "data"), "-U", "paretune", "--pwfile", str(root / "pw"),
               "--auth", "scram-sha-256", "--no-sync")
    assert done.returncode == 0, done.stderr
    options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off"
    done = run(str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-o", options, "-l", str(root / "log"), "-w", "start")
    assert done.returncode == 0, done.stderr + (root / "log").read_text(errors="replace")
    try:
        yield f"postgresql://paretune:{password}@127.0.0.1:{port}/postgres"
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def _search_and_resume(url: str, name: str) -> None:
    spec = from_dict(tiny_spec_dict(name=name, budget={"trials": 3, "concurrency": 2, "epochs": 2}))
    summary = launch(spec, storage_url=url)
    assert summary.complete == 3 and summary.failed_this_run == 0
    trials = optuna.load_study(study_name=name, storage=open_storage(url)).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert all(len(t.values) == 3 and t.user_attrs["node_id"] for t in trials)
    again = launch(spec.model_copy(update={"budget": spec.budget.model_copy(update={"trials": 4})}), storage_url=url)
    trials = optuna.load_study(study_name=name, storage=open_storage(url)).get_trials()
    assert again.complete == 4 and len(trials) == 4  # one more, the first three untouched


def test_search_on_postgresql(ray_local, postgres_url):
    _search_and_resume(postgres_url, "pg")


def test_search_on_journal_file(ray_local, tmp_path):
    url = f"journal:///{tmp_path / 'trials.log'}"
    _search_and_resume(url, "journal")
    assert (tmp_path / "trials.log").stat().st_size > 0


def test_sqlite_waits_for_its_lock():
    # Concurrent writers (the driver, optuna-dashboard, a second launch) must wait
    # rather than fail with "database is locked".
    assert SQLITE_TIMEOUT_S >= 30
    storage = open_storage("sqlite:///:memory:")
    assert storage.engine.dialect.name == "sqlite"


def test_unreachable_postgresql_is_one_line(tmp_path):
    from search.errors import UsageError

    with pytest.raises(UsageError, match=r"^--storage postgresql://u:\*\*\*@127.0.0.1:\d+/db: cannot open storage") as error:
        open_storage(f"postgresql://u:secret@127.0.0.1:{free_port()}/db")
    assert "secret" not in str(error.value) and "\n" not in str(error.value)


READ_ONLY = [
    ["status", "digits"],
    ["front", "digits"],
    ["export", "digits", "--out", "x.toml"],
    ["dashboard", "digits", "--port", "8089"],
]


@pytest.mark.parametrize("command", READ_ONLY, ids=[c[0] for c in READ_ONLY])
@pytest.mark.parametrize("url", ["sqlite:///typo.db", "journal:///{tmp}/typo.log", None], ids=["sqlite", "journal", "default"])
def test_read_only_commands_create_no_storage(tmp_path, command, url):
    from tests.conftest import run_cli

    args = list(command) + (["--storage", url.replace("{tmp}", str(tmp_path))] if url else [])
    result = run_cli(*args, cwd=tmp_path, env={"PARETUNE_STORAGE": ""}, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no such file" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    if url is None:
        assert "sqlite:///paretune.db: no such file paretune.db (the default storage" in result.stderr
    assert list(tmp_path.iterdir()) == []  # no database, no journal, no lock file, no export


def test_reading_a_file_that_is_no_optuna_storage_writes_nothing(tmp_path):
    from search.errors import UsageError
    from search.storage import load_study

    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(UsageError, match=r"^--storage sqlite:///.*empty\.db: cannot open storage"):
        load_study(f"sqlite:///{empty}", "digits")
    assert empty.stat().st_size == 0  # no tables were created in it

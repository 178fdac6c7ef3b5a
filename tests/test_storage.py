"""The same small search with its trials kept on a real PostgreSQL server and in
Optuna's JournalStorage file (the shared-filesystem backend): every trial lands
COMPLETE, readable by plain Optuna, and a second launch resumes instead of rerunning.

The PostgreSQL server is a throwaway one (the `postgres_url` fixture in conftest.py:
initdb + pg_ctl in a temp dir, TCP on 127.0.0.1 only, password auth); the test is
skipped, saying why, only where no PostgreSQL binaries are installed (`.ci/run`
installs them on CI).
"""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from search.core.spec import from_dict
from search.core.storage import SQLITE_TIMEOUT_S, open_storage
from search.driver.launcher import launch
from tests.conftest import tiny_spec_dict
from tests.raycluster import free_port


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


@pytest.mark.ray
@pytest.mark.postgres
def test_search_on_postgresql(ray_local, postgres_url):
    _search_and_resume(postgres_url, "pg")


@pytest.mark.ray
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
    from search.core.errors import UsageError

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
    from search.core.errors import UsageError
    from search.core.storage import load_study

    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(UsageError, match=r"^--storage sqlite:///.*empty\.db: cannot open storage"):
        load_study(f"sqlite:///{empty}", "digits")
    assert empty.stat().st_size == 0  # no tables were created in it

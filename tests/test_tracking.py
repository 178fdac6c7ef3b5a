"""MLflow tracking and what optuna-dashboard shows, against a real MLflow tracking
server on 127.0.0.1 (SQLite backend) read back with MLflow's own client:

- what a trial's run carries (params, objective values and measured attrs as
  metrics, state, reason, node), and the study note's front table;
- two drivers and a resume on one study: one parent run, one nested run per finished
  trial, none twice, values equal to the Optuna storage's;
- a tracking server down when the search starts and back during it: one notice, the
  search completes, the runs catch up;
- export and train: the config and the shipped model in the trial's run, a Model
  Registry version with the front values as tags, and both attached to their trial
  in the Optuna storage (optuna-dashboard's artifact store).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.core import optuna_internals
from search.core.storage import open_storage
from search.results import dashboard, tracking
from tests.conftest import ROOT, fresh_imports, run_cli, tiny_spec_dict, write_toml
from tests.raycluster import free_port

mlflow = pytest.importorskip("mlflow", reason='mlflow is not installed: pip install -e ".[mlflow]"')
optuna.logging.set_verbosity(optuna.logging.WARNING)


def start_server(root: Path, port: int) -> subprocess.Popen:
    """`mlflow server` with a SQLite backend and local artifacts, up (its /health answers)."""
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=root, stdout=subprocess.DEVNULL, stderr=open(root / "server.log", "a"),
        # No job runner: it starts 8 more processes (GenAI jobs) that a tracking test never uses.
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return server
        except OSError:
            assert server.poll() is None, (root / "server.log").read_text()[-2000:]
            time.sleep(0.5)
    server.kill()
    raise AssertionError("mlflow server did not start: " + (root / "server.log").read_text()[-2000:])


def stop_server(server: subprocess.Popen) -> None:
    # uvicorn's worker is a child of the `mlflow server` process: end the whole tree.
    for pid in _children(server.pid) + [server.pid]:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    server.wait()


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(c) for child in out for c in [*_children(int(child)), int(child)]]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    process = start_server(root, port)
    yield f"http://127.0.0.1:{port}"
    stop_server(process)


def runs_of(uri: str, experiment: str) -> tuple[list, list]:
    """(parent runs, trial runs) of an experiment, active ones only."""
    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], max_results=1000) if found else []
    return ([r for r in runs if r.data.tags.get(tracking.ROLE_TAG) == "study"],
            [r for r in runs if r.data.tags.get(tracking.ROLE_TAG) == "trial"])


def start_table_driver(url: str, name: str, trials: int, seconds: float, uri: str, log: Path,
                       env: dict | None = None) -> subprocess.Popen:
    """A real driver (search.driver.launcher.launch, its own local Ray) on NAS-Bench-201 lookups."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.drivers", "--storage", url, "--name", name, "--trials", str(trials),
         "--concurrency", "2", "--seconds", str(seconds), "--log", str(log), "--mlflow", uri],
        cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


# --- what a run carries -----------------------------------------------------------------


def test_a_trial_run_holds_its_values_attrs_state_and_node():
    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = study.ask({"family": optuna.distributions.CategoricalDistribution(["mlp", "cnn"])})
    for key, value in {"size_kb": 12.5, "quantized": True, "hostname": "edge-1", "node_ip": "10.0.0.7",
                       "measure_host": "edge-2 (10.0.0.8)", "energy_source": "estimate", "accuracy": 0.5}.items():
        trial.set_user_attr(key, value)
    study.tell(trial, [0.91, 1.5])
    pruned = study.ask()
    pruned.set_user_attr("prune_reason", "stopped at rung 3")
    study.tell(pruned, state=TrialState.PRUNED)

    params, metrics, tags = tracking.trial_record(study.trials[0], ["accuracy", "latency_ms"])
    assert params == {"family": study.trials[0].params["family"]}
    # The objective value wins over the attr of the same name; a bool is no metric.
    assert metrics == {"accuracy": 0.91, "latency_ms": 1.5, "size_kb": 12.5}
    assert tags["paretune.state"] == "COMPLETE" and tags["paretune.trial"] == "0"
    assert tags["paretune.node"] == "edge-1 (10.0.0.7)" and tags["paretune.measured_on"] == "edge-2 (10.0.0.8)"
    assert tags["paretune.attr.energy_source"] == "estimate"
    _, metrics, tags = tracking.trial_record(study.trials[1], ["accuracy", "latency_ms"])
    assert metrics == {} and tags["paretune.state"] == "PRUNED" and tags["paretune.prune_reason"] == "stopped at rung 3"


# --- drivers, resume, outage ------------------------------------------------------------


@pytest.mark.ray
@pytest.mark.slow
def test_two_drivers_and_a_resume_log_each_trial_once(server, tmp_path):
    url, name = f"sqlite:///{tmp_path / 'two.db'}", "tracked-two"
    drivers = [start_table_driver(url, name, 10, 1.0, server, tmp_path / "log.jsonl") for _ in range(2)]
    outputs = [d.communicate(timeout=300)[0] for d in drivers]
    assert [d.returncode for d in drivers] == [0, 0], outputs
    resumed = start_table_driver(url, name, 14, 1.0, server, tmp_path / "log.jsonl")  # the budget raised: 4 more
    outputs.append(resumed.communicate(timeout=300)[0])
    assert resumed.returncode == 0, outputs[-1]
    assert not any("Traceback" in out or "View run" in out for out in outputs), outputs

    study = optuna.load_study(study_name=name, storage=open_storage(url))
    finished = study.get_trials(states=tracking.FINISHED)
    parents, runs = runs_of(server, name)
    assert len(parents) == 1
    numbers = sorted(int(r.data.tags[tracking.TRIAL_TAG]) for r in runs)
    assert numbers == sorted(t.number for t in finished)  # every finished trial, none twice
    assert {r.data.tags[tracking.PARENT_TAG] for r in runs} == {parents[0].info.run_id}
    by_number = {t.number: t for t in finished}
    for run in runs:
        trial = by_number[int(run.data.tags[tracking.TRIAL_TAG])]
        assert run.data.tags["paretune.state"] == trial.state.name
        if trial.state == TrialState.COMPLETE:
            assert [run.data.metrics[n] for n in study.metric_names] == pytest.approx(trial.values)
            assert run.data.params == {k: str(v) for k, v in trial.params.items()}
            assert run.info.status == "FINISHED"
    # The study's run: its front (as `paretune front --json` has it) and hypervolume per trial.
    client = mlflow.MlflowClient(server)
    parent = parents[0].info.run_id
    front = json.loads(Path(client.download_artifacts(parent, "front.json", str(tmp_path))).read_text())
    assert parents[0].data.metrics["front_size"] == len(front["trials"]) >= 1
    assert parents[0].data.metrics["trials_complete"] == sum(t.state == TrialState.COMPLETE for t in finished)
    history = client.get_metric_history(parent, "hypervolume")
    assert sorted({m.step for m in history}) == sorted(t.number for t in study.trials)
    assert {a.path for a in client.list_artifacts(parent)} >= {"front.json", "front.md", "front.png", "spec.json"}
    print(f"\n2 drivers + a resume on one study: {len(finished)} finished trials, {len(runs)} trial runs, 1 study run")


@pytest.mark.ray
@pytest.mark.slow
def test_a_server_down_at_the_start_is_one_notice_and_the_runs_catch_up(tmp_path):
    root = tmp_path / "late"
    root.mkdir()
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    url, name = f"sqlite:///{tmp_path / 'late.db'}", "tracked-late"
    # 24 trials of 2 s, two at a time: once 2 are COMPLETE, about 20 s of search remain for
    # the server to start in (with 16 trials and 3 COMPLETE first, a busy machine once took
    # longer than the 13 s left, and the search ended with MLflow still unreachable).
    driver = start_table_driver(url, name, 24, 2.0, uri, tmp_path / "log.jsonl", env={"PARETUNE_TRACKING_RETRY_S": "1"})
    storage = open_storage(url)

    def complete() -> int:
        try:
            return len(optuna.load_study(study_name=name, storage=storage).get_trials(states=(TrialState.COMPLETE,)))
        except KeyError:
            return 0

    deadline = time.monotonic() + 180
    while complete() < 2 and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.5)
    started = start_server(root, port)  # back while the search runs
    try:
        output = driver.communicate(timeout=300)[0]
        assert driver.returncode == 0, output
        assert output.count("unreachable") == 1, output  # one notice, not one per trial
        assert f"MLflow at {uri} is back:" in output, output
        study = optuna.load_study(study_name=name, storage=storage)
        _, runs = runs_of(uri, name)
        assert sorted(int(r.data.tags[tracking.TRIAL_TAG]) for r in runs) == sorted(
            t.number for t in study.get_trials(states=tracking.FINISHED))
        print("\n" + "\n".join(line for line in output.splitlines() if "MLflow" in line))
    finally:
        stop_server(started)


# --- export, train, the dashboard --------------------------------------------------------


@pytest.mark.ray
@pytest.mark.slow
def test_export_and_train_log_register_and_attach(server, tmp_path):
    data = tiny_spec_dict(name="tracked-cli", budget={"trials": 3, "concurrency": 1, "epochs": 2, "early_stopping": "none"})
    data["space"]["architecture"] = {"families": ["mlp"], "width": [8, 16], "depth": [1, 1]}
    spec = write_toml(tmp_path / "tracked.toml", data)
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    launched = run_cli("launch", str(spec), "--storage", url, "--mlflow", server, cwd=tmp_path, timeout=600)
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
    assert f"MLflow: experiment 'tracked-cli' at {server}" in launched.stdout and "View run" not in launched.stdout

    config = tmp_path / "best.toml"
    exported = run_cli("export", "tracked-cli", "--storage", url, "--out", str(config), cwd=tmp_path)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    number = int(exported.stdout.split("exported trial ")[1].split()[0])
    assert f"optuna-dashboard: best.toml attached to trial {number}" in exported.stdout
    assert f"MLflow: best.toml logged to trial {number}'s run" in exported.stdout

    trained = run_cli("train", str(config), "--out", str(tmp_path / "model"), cwd=tmp_path, timeout=600)
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    assert "registered as 'tracked-cli' version 1" in trained.stdout, trained.stdout

    client = mlflow.MlflowClient(server)
    _, runs = runs_of(server, "tracked-cli")
    run = next(r for r in runs if r.data.tags[tracking.TRIAL_TAG] == str(number))
    assert [a.path for a in client.list_artifacts(run.info.run_id, "export")] == ["export/best.toml"]
    shipped = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"model.pt", "model_card.md", "model_card.json", "config.toml"} <= shipped, shipped
    version = client.get_model_version("tracked-cli", "1")
    study = optuna.load_study(study_name="tracked-cli", storage=open_storage(url))
    trial = study.trials[number]
    assert version.run_id == run.info.run_id and version.tags[tracking.TRIAL_TAG] == str(number)
    assert [float(version.tags[n]) for n in study.metric_names] == pytest.approx(trial.values)
    assert 0.0 < float(version.tags["test_accuracy"]) <= 1.0

    # optuna-dashboard: the files on the trial's page, read back through Optuna's own API.
    metas = optuna.artifacts.get_all_artifact_meta(trial, storage=study._storage)
    assert {m.filename for m in metas} >= {"best.toml", "model.pt", "model_card.md"}
    store = dashboard.artifact_store(url)
    with store.open_reader(next(m.artifact_id for m in metas if m.filename == "best.toml")) as handle:
        assert handle.read() == config.read_bytes()


def stored_note(study: optuna.Study) -> str:
    """The study's note, read as optuna-dashboard reads it."""
    from optuna_dashboard._note import get_note_from_system_attrs

    attrs = optuna_internals.storage_of(study).get_study_system_attrs(optuna_internals.study_id(study))
    return get_note_from_system_attrs(attrs, None)["body"]


def test_the_study_note_has_the_front_table_knee_and_export_command(tmp_path):
    from tests.test_export import searched_study

    study, _ = searched_study(f"sqlite:///{tmp_path / 'note.db'}", name="noted")
    assert dashboard.write_note(study, " --storage sqlite:///note.db")
    note = stored_note(study)
    assert note.startswith("# noted: the Pareto front")
    assert "| trial | accuracy | latency_ms | energy_mj |" in note
    assert "| **1\\*** | **0.92** |" in note  # the knee (trial 1 of VALUES), starred and bold
    assert "paretune export noted --storage sqlite:///note.db --out noted-best.toml" in note


def test_a_search_writes_its_note_without_the_dashboard_app(tmp_path):
    """At the end of a search the note is written by optuna-dashboard's own note code,
    loaded without the dashboard's web app (which imports scikit-learn's forests); the
    dashboard reads it back. A fresh interpreter, as a driver is."""
    from tests.test_export import searched_study

    url = f"sqlite:///{tmp_path / 'light.db'}"
    searched_study(url, name="light")
    code = (
        "import optuna\n"
        "from search.core.storage import open_storage\n"
        "from search.results import dashboard\n"
        f"study = optuna.load_study(study_name='light', storage=open_storage({url!r}))\n"
        "assert dashboard.write_note(study)\n"
    )
    assert fresh_imports(code, ("optuna_dashboard", "sklearn")) == []  # neither the dashboard's app nor scikit-learn
    note = stored_note(optuna.load_study(study_name="light", storage=open_storage(url)))
    assert note.startswith("# light: the Pareto front") and "paretune export light --out light-best.toml" in note


def test_artifacts_lie_beside_a_file_storage(tmp_path, monkeypatch):
    monkeypatch.setenv("PARETUNE_HOME", str(tmp_path / "home"))
    assert dashboard.artifact_dir(f"sqlite:///{tmp_path}/s.db") == Path(f"{tmp_path}/s.db.artifacts")
    assert dashboard.artifact_dir(f"{tmp_path}/j.log") == Path(f"{tmp_path}/j.log.artifacts")
    server_dir = dashboard.artifact_dir("postgresql://u:secret@db/x")
    assert server_dir.parent == tmp_path / "home" / "artifacts" and "secret" not in str(server_dir)


def test_a_journal_storage_attaches_to_the_study_and_says_so(tmp_path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    log = tmp_path / "j.log"
    study = optuna.create_study(storage=JournalStorage(JournalFileBackend(str(log))), study_name="j")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    config = tmp_path / "best.toml"
    config.write_text("x = 0.5\n")
    where = dashboard.attach(study, 1, [config], str(log))
    assert where == "trial-1-best.toml attached to the study (this storage cannot add to a finished trial)"
    metas = optuna.artifacts.get_all_artifact_meta(study)
    assert [m.filename for m in metas] == ["trial-1-best.toml"]
    with dashboard.artifact_store(str(log)).open_reader(metas[0].artifact_id) as handle:
        assert handle.read() == b"x = 0.5\n"

"""Searches on a real 2-node Ray cluster on loopback (token auth on): trials spread over
both nodes, measurement pinned to the node carrying `measure_on`, a missing resource
stops the launch with one line, and a search submitted as a Ray Job completes.

The cluster is started with `ray start` in its own directory and stopped by process
group (see tests/raycluster.py); each search runs in a subprocess (`python -m search`)
so it never shares a process with the test session's own local Ray.
"""

from __future__ import annotations

import collections
import os

import optuna
import pytest
import torch
from optuna.trial import TrialState

from search.trial import portable
from tests.conftest import run_cli, tiny_spec_dict, write_toml
from tests.raycluster import loopback_cluster


def _params(**overrides) -> dict:
    params = {
        "family": "mobilenet", "width": 8, "depth": 1, "kernel": 3, "batch_norm": True, "prune_kind": "none",
        "prune_ratio": 0.3, "quant_mode": "static", "optimizer": "adam", "lr": 1e-3, "schedule": "constant",
        "batch_size": 64, "weight_decay": 1e-5, "l1": False, "dropout": 0.0, "label_smoothing": 0.0, "runtime": "eager",
    }
    return {**params, **overrides}


@pytest.mark.parametrize(
    "overrides",
    [
        {"quant_mode": "static"},  # FX GraphModule with fused quantized ConvReLU2d: plain pickle fails
        {"quant_mode": "qat", "prune_kind": "structured"},
        {"quant_mode": "static", "runtime": "torchscript"},  # ScriptModule: torch.jit.save
        {"family": "mlp", "quant_mode": "dynamic", "runtime": "onnxruntime"},  # ONNX Runtime session
    ],
    ids=["static-fx", "qat-structured", "torchscript-int8", "onnxruntime-int8"],
)
def test_models_ship_between_processes_unchanged(overrides):
    from search.core.spec import from_dict
    from search.tasks.data import load_task
    from search.trial.pipeline import build_and_compress, deploy

    spec = from_dict(tiny_spec_dict(budget={"epochs": 1}, space={"runtime": {"enabled": True}}))
    task = load_task(spec)
    params = _params(**overrides)
    model, ctx, active = build_and_compress(params, task, spec, seed=0)
    runner = deploy(model, params, ctx, active)
    x = torch.from_numpy(task.val.X[:16])
    for original in (model, runner):
        copy = portable.loads(portable.dumps(original))
        # (An FX GraphModule's class is made per instance: compare by name.)
        assert type(copy).__name__ == type(original).__name__ or isinstance(original, torch.jit.ScriptModule)
        assert torch.equal(copy(x), original(x))


@pytest.fixture(scope="module")
def cluster():
    """Head: 1 CPU and the custom resource `edge`, job server on 127.0.0.1; a second
    node: 1 CPU, no `edge`."""
    nodes = loopback_cluster(dashboard=True)
    try:
        nodes.start_head(cpus=1, resources={"edge": 1})
        nodes.start_worker("worker", cpus=1)
        alive = nodes.wait_for_nodes(2)
        nodes.edge_node = next(n["id"] for n in alive if n["resources"].get("edge"))
        nodes.node_ids = {n["id"] for n in alive}
        yield nodes
    finally:
        nodes.stop()


def _trials(url: str, name: str):
    return optuna.load_study(study_name=name, storage=url).get_trials()


def _launch(cluster, tmp_path, name: str, storage: str, **overrides):
    spec = write_toml(tmp_path / f"{name}.toml", tiny_spec_dict(name=name, **overrides))
    done = run_cli("launch", str(spec), "--address", cluster.address, "--storage", storage, env=cluster.env(), timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


@pytest.mark.ray
@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.solo
def test_search_spreads_trials_over_both_nodes(cluster, tmp_path):
    url = f"sqlite:///{tmp_path / 'spread.db'}"
    # Trials long enough (6 epochs) that the second node's first worker (~10 s to start:
    # imports, the code's runtime_env) is up before the first node alone has finished
    # the budget: with 2-epoch trials all six once ran on the head. Alone on the machine
    # (`solo`): beside other tests that start-up took longer than all six trials, and
    # Tune, reusing the head's actor as each trial ended, never needed the second node.
    _launch(cluster, tmp_path, "spread", url, budget={"trials": 6, "concurrency": 2, "epochs": 6})
    trials = _trials(url, "spread")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    per_node = collections.Counter(t.user_attrs["node_id"] for t in trials)
    assert set(per_node) == cluster.node_ids  # both nodes trained trials
    for t in trials:
        assert t.user_attrs["hostname"] and t.user_attrs["node_ip"] and t.user_attrs["cpu_model"]
        # Without measure_on a trial measures where it trained.
        assert t.user_attrs["measured_on"] == t.user_attrs["node_id"]


@pytest.mark.ray
@pytest.mark.cluster
@pytest.mark.slow
def test_measure_on_pins_measurement_to_the_edge_node(cluster, tmp_path):
    url = f"sqlite:///{tmp_path / 'edge.db'}"
    _launch(cluster, tmp_path, "edge", url, budget={"trials": 4, "concurrency": 2, "epochs": 6},
            resources={"measure_on": "edge"})
    trials = _trials(url, "edge")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert {t.user_attrs["measured_on"] for t in trials} == {cluster.edge_node}
    # Two trials at a time on two 1-CPU nodes: some trained on the other node and
    # shipped their model to the edge node to be measured.
    assert any(t.user_attrs["node_id"] != cluster.edge_node for t in trials)
    assert all(t.user_attrs["latency_ms"] > 0 and t.values[1] == t.user_attrs["latency_ms"] for t in trials)


@pytest.mark.ray
@pytest.mark.cluster
@pytest.mark.slow
def test_measure_on_a_resource_no_node_has_stops_with_one_line(cluster, tmp_path):
    url = f"sqlite:///{tmp_path / 'none.db'}"
    spec = write_toml(tmp_path / "nogpu.toml", tiny_spec_dict(name="nogpu", resources={"measure_on": "jetson"}))
    done = run_cli("launch", str(spec), "--address", cluster.address, "--storage", url, env=cluster.env(), timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: resources.measure_on:") and "'jetson'" in lines[0]
    assert "edge" in lines[0]  # names the resources that do exist
    assert "Traceback" not in done.stderr
    assert not optuna.get_all_study_summaries(url)  # nothing written


@pytest.mark.ray
@pytest.mark.cluster
@pytest.mark.slow
def test_submitted_job_runs_the_search_on_the_head(cluster, tmp_path):
    url = f"sqlite:///{tmp_path / 'job.db'}"  # absolute: the job's working dir is temporary
    spec = write_toml(tmp_path / "job.toml", tiny_spec_dict(name="job", budget={"trials": 3, "concurrency": 2, "epochs": 2}))
    done = run_cli("submit", str(spec), "--address", cluster.dashboard_url, "--storage", url, "--wait",
                   env=cluster.env(), timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    job_id = done.stdout.strip().splitlines()[0]
    assert job_id.startswith("raysubmit_")
    assert "3/3 COMPLETE" in done.stdout  # the driver's own output, followed from the job log
    trials = _trials(url, "job")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    shown = run_cli("status", "job", "--address", cluster.dashboard_url, "--storage", url, env=cluster.env(), timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert job_id in shown.stdout and "SUCCEEDED" in shown.stdout and "COMPLETE=3" in shown.stdout


@pytest.mark.ray
@pytest.mark.cluster
@pytest.mark.slow
def test_a_stopped_job_stores_its_running_trials_and_says_how_to_resume(cluster, tmp_path):
    import subprocess
    import sys
    import time
    from pathlib import Path

    url = f"sqlite:///{tmp_path / 'stopped.db'}"
    spec = write_toml(tmp_path / "stopped.toml",
                      tiny_spec_dict(name="stopped", budget={"trials": 40, "concurrency": 2, "epochs": 2}))
    done = run_cli("submit", str(spec), "--address", cluster.dashboard_url, "--storage", url, env=cluster.env(), timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    job_id = done.stdout.strip().splitlines()[0]
    ray = str(Path(sys.executable).parent / "ray")

    def job(*args: str) -> str:  # Ray's own job CLI, with the cluster's token
        return subprocess.run([ray, "job", *args, "--address", cluster.dashboard_url, job_id], env={**os.environ, **cluster.env()},
                              capture_output=True, text=True, timeout=120).stdout

    def complete() -> int:
        try:
            return sum(t.state == TrialState.COMPLETE for t in _trials(url, "stopped"))
        except Exception:  # noqa: BLE001 - not created yet
            return 0

    deadline = time.monotonic() + 240
    while complete() < 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert complete() >= 1, job("logs")[-3000:]
    job("stop")  # SIGTERM to the job's driver
    while "was stopped" not in job("status") and time.monotonic() < deadline + 120:
        time.sleep(1)
    logs = job("logs")
    assert "was stopped" in job("status")  # Ray's status line: "Job '...' was stopped"
    assert "stopping on SIGTERM" in logs and "resume with:" in logs, logs[-3000:]
    trials = _trials(url, "stopped")
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert [t for t in trials if t.state == TrialState.FAIL and t.user_attrs["fail_reason"].startswith("interrupted")]


@pytest.mark.ray
@pytest.mark.cluster
@pytest.mark.slow
def test_submit_refuses_a_relative_storage_path(cluster, tmp_path):
    spec = write_toml(tmp_path / "rel.toml", tiny_spec_dict(name="rel"))
    done = run_cli("submit", str(spec), "--address", cluster.dashboard_url, "--storage", "sqlite:///rel.db", env=cluster.env())
    assert done.returncode == 2 and done.stderr.strip().startswith("error: --storage sqlite:///rel.db: use an absolute path")


def test_token_file_paretune_writes_is_private(tmp_path, monkeypatch):
    from search.driver.cluster import ensure_private_token

    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(key, raising=False)
    path = tmp_path / "ray" / "auth_token"
    ensure_private_token(path)
    assert path.stat().st_mode & 0o777 == 0o600 and len(path.read_text()) == 64
    token = path.read_text()
    ensure_private_token(path)
    assert path.read_text() == token  # an existing token is kept
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ensure_private_token(tmp_path / "other")
    assert not (tmp_path / "other").exists()

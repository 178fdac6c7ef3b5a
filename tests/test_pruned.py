"""Stopped trials in the storage, without Ray: the searcher stores what a scheduler
stopped as PRUNED (never COMPLETE, whatever its last result holds), a trial infeasible
before training as PRUNED, a NaN at a rung as FAIL; the MO-ASHA scheduler writes its
rung records where any Optuna client reads them; the sampler learns from PRUNED trials."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.schedulers import TrialScheduler

from search.core import outages
from search.core.spec import from_dict
from search.core.storage import open_storage
from search.driver import pruned, tell
from search.driver.launcher import open_study
from search.driver.moasha import MOASHAScheduler
from search.driver.searcher import AskTellSearcher
from tests.conftest import tiny_spec_dict

FINAL = {"accuracy": 0.9, "latency_ms": 1.0, "energy_mj": 2.0, "size_kb": 3.0, "done": True}


def searcher_for(tmp_path, **spec_overrides) -> AskTellSearcher:
    spec = from_dict(tiny_spec_dict(name="p", **spec_overrides))
    study, _ = open_study(spec, open_storage(f"sqlite:///{tmp_path / 'p.db'}"), "image")
    return AskTellSearcher(study, spec, "image", budget=3, max_failed=3, max_infeasible=2)


def epoch_result(epoch: int, accuracy: float, latency: float = 0.2, energy: float = 1.0) -> dict:
    return {"epoch": epoch, "val_accuracy": accuracy, "pretrain_latency_ms": latency, "pretrain_energy_mj": energy,
            "pretrain_seconds": 0.1}


def test_a_trial_the_scheduler_stopped_is_pruned_never_complete(tmp_path):
    searcher = searcher_for(tmp_path)
    searcher.suggest("t")
    searcher.remember("t", {pruned.EPOCH_ATTR: 3, "rung_3": {"epoch": 3, "promoted": False}})
    searcher.stop_as("t", "dominated at rung epoch 3", pruned=True)
    # Even a last result with every objective in it does not make it COMPLETE.
    searcher.on_trial_complete("t", {**FINAL, **epoch_result(3, 0.5)})
    (trial,) = searcher.study.get_trials()
    assert trial.state == TrialState.PRUNED and trial.values is None
    assert trial.user_attrs[pruned.REASON_ATTR] == "dominated at rung epoch 3"
    assert trial.user_attrs[pruned.EPOCH_ATTR] == 3 and trial.user_attrs["rung_3"]["promoted"] is False
    assert trial.user_attrs["pretrain"]["latency_ms"] == 0.2
    assert searcher.pruned == {pruned.BEFORE_TRAINING: 0, pruned.AT_RUNG: 1} and searcher.failed == 0
    assert searcher.complete == 0 and not searcher.study.best_trials


def test_infeasible_before_training_is_pruned_and_enough_of_them_end_the_search(tmp_path):
    searcher = searcher_for(tmp_path, constraints=["latency_ms <= 0.01"])
    for name in ("a", "b"):
        assert isinstance(searcher.suggest(name), dict)
        searcher.on_trial_complete(name, {pruned.REASON_ATTR: "infeasible before training: latency_ms 0.2 > 0.01",
                                          pruned.EPOCH_ATTR: 0, "pretrain_latency_ms": 0.2, "pretrain_seconds": 0.1})
    trials = searcher.study.get_trials()
    assert [t.state for t in trials] == [TrialState.PRUNED, TrialState.PRUNED]
    assert all(t.user_attrs[pruned.EPOCH_ATTR] == 0 for t in trials)
    # The sampler's constraint values: Optuna's after_trial stored them on the PRUNED trial.
    assert [list(t.constraints.values()) for t in trials] == [[pytest.approx(0.19)]] * 2
    assert pruned.counts(trials) == {pruned.BEFORE_TRAINING: 2}
    assert searcher.infeasible_stop and searcher.exhausted
    assert searcher.suggest("c") == AskTellSearcher.FINISHED


def test_a_pruned_outcome_the_storage_would_not_take_is_replayed_pruned(tmp_path, monkeypatch):
    monkeypatch.setenv("PARETUNE_HOME", str(tmp_path / "home"))
    searcher = searcher_for(tmp_path)
    searcher.unsaved = tell.unsaved_path("p", "sqlite:///p.db")
    searcher.suggest("t")
    (live,) = searcher.live.values()

    def unavailable(*args, **kwargs):
        raise outages.StorageUnavailable("OperationalError: database is locked (after 8 attempts)")

    monkeypatch.setattr(tell, "retrying", unavailable)
    searcher.stop_as("t", "dominated at rung epoch 1", pruned=True)
    searcher.on_trial_complete("t", epoch_result(1, 0.1))
    monkeypatch.undo()
    monkeypatch.setenv("PARETUNE_HOME", str(tmp_path / "home"))
    entry = json.loads(searcher.unsaved.read_text())
    assert entry["pruned"] is True and entry["values"] is None
    assert tell.replay(searcher.study, searcher.unsaved) == 1
    kept = [t for t in searcher.study.get_trials() if t.number != live.number]
    assert [t.state for t in kept] == [TrialState.PRUNED]
    assert kept[0].user_attrs[pruned.REASON_ATTR] == "dominated at rung epoch 1"


def test_the_scheduler_ranks_against_the_storage_and_writes_its_records_there(tmp_path):
    searcher = searcher_for(tmp_path, budget={"epochs": 4, "early_stopping": "moasha", "reduction_factor": 2})
    scheduler = MOASHAScheduler(searcher, searcher.spec)
    assert scheduler.rungs == [1, 2]
    tune = {name: SimpleNamespace(trial_id=name) for name in ("good", "bad", "nan")}
    for name in tune:
        searcher.suggest(name)
    assert scheduler.on_trial_result(None, tune["good"], epoch_result(1, 0.9)) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, tune["good"], epoch_result(1, 0.9)) == TrialScheduler.CONTINUE  # judged once
    assert scheduler.on_trial_result(None, tune["good"], {"epoch": 3, "val_accuracy": 0.1}) == TrialScheduler.CONTINUE
    # Read back by a plain Optuna client while the trial still runs.
    study = optuna.load_study(study_name="p", storage=f"sqlite:///{tmp_path / 'p.db'}")
    good = study.trials[searcher.live["good"].number]
    assert good.state == TrialState.RUNNING
    assert good.user_attrs["rung_1"] == {"epoch": 1, "values": {"accuracy": 0.9, "latency_ms": 0.2, "energy_mj": 1.0},
                                         "promoted": True, "ahead": 0, "keep": 1, "of": 1}
    # Slower and less accurate: dominated, stopped, stored PRUNED with its record.
    assert scheduler.on_trial_result(None, tune["bad"], epoch_result(1, 0.5, 0.4, 2.0)) == TrialScheduler.STOP
    searcher.on_trial_complete("bad", epoch_result(1, 0.5, 0.4, 2.0))
    # A NaN at a rung: stopped and FAIL, not recorded at the rung.
    assert scheduler.on_trial_result(None, tune["nan"], epoch_result(1, math.nan)) == TrialScheduler.STOP
    searcher.on_trial_complete("nan", epoch_result(1, math.nan))
    by_number = {t.number: t for t in study.get_trials()}
    bad, nan = by_number[1], by_number[2]
    assert bad.state == TrialState.PRUNED and bad.user_attrs[pruned.EPOCH_ATTR] == 1
    assert bad.user_attrs["rung_1"]["promoted"] is False and bad.user_attrs["rung_1"]["of"] == 2
    assert nan.state == TrialState.FAIL and "rung_1" not in nan.user_attrs
    assert nan.user_attrs["fail_reason"] == "non-finite objective at rung epoch 1: accuracy nan"
    assert scheduler.decisions == {"promoted": 1, "stopped": 1, "failed": 1}


def late_infeasible_proposals(as_pruned: bool, seed: int = 0) -> int:
    """40 TPE trials on x in [0, 1] (front: x in [0, 0.3]); x > 0.6 is infeasible and,
    as before training, gets no objective values: told PRUNED with its violation
    (`as_pruned`), or FAIL. How many of the last 20 proposals are infeasible. No
    constraints_func: TPE reads the constraint values `tell.record` sets on the trial."""
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=10)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    for _ in range(40):
        trial = study.ask()
        x = trial.suggest_float("x", 0, 1)
        attrs = {"constraints": [x - 0.6]}
        if x <= 0.6:
            tell.record(study, trial, [abs(x - 0.3), x], attrs)
        elif as_pruned:
            tell.record(study, trial, None, attrs, reason="infeasible before training", pruned=True)
        else:
            tell.record(study, trial, None, {}, reason="infeasible")
    for t in study.get_trials():
        if t.state != TrialState.FAIL:  # Optuna's own constraint values, as the searcher stored them
            assert t.constraints == {"0": pytest.approx(t.params["x"] - 0.6)}
    return sum(t.params["x"] > 0.6 for t in study.get_trials()[20:])


def test_tpe_stops_proposing_configs_like_the_pruned_infeasible_ones():
    # Told PRUNED (with the violation), they join TPE's bad group: few proposals go there.
    # Told FAIL, TPE never sees them and keeps proposing the region (all 20 here).
    assert late_infeasible_proposals(as_pruned=True) <= 3
    assert late_infeasible_proposals(as_pruned=False) >= 15

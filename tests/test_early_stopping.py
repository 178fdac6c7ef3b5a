"""Early stopping on real searches: hard constraints checked before training, MO-ASHA
stopping dominated trials at rungs, and what the storage holds afterwards (PRUNED,
never COMPLETE, never on the front; rung tables rebuilt from the storage after a
driver is killed)."""

from __future__ import annotations

import statistics
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.core.spec import from_dict
from search.core.toml_text import dumps
from search.driver import pruned, warmstart
from search.results import pareto
from tests.conftest import run_cli, tiny_spec_dict, write_toml
from tests.test_faults import kill_group, start_driver, states, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.ray]

MLP = {"families": ["mlp"], "width": [8, 32], "depth": [1, 2]}


def constrained_spec(tmp_path: Path, name: str, constraint: str, trials: int, epochs: int = 20) -> Path:
    data = tiny_spec_dict(name=name, constraints=[constraint], budget={"trials": trials, "concurrency": 2, "epochs": epochs})
    data["space"]["architecture"] = MLP
    return write_toml(tmp_path / f"{name}.toml", data)


def test_a_constraint_no_trial_can_meet_prunes_every_trial_before_training(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    # The trained reference: a loose constraint prunes none, every trial trains its 90 epochs
    # (seconds: an epoch of these MLPs is a few hundredths of a second; measured alone, 150
    # epochs trained in a median 4.3 s against a median 0.13 s pre-training check).
    loose = run_cli("launch", str(constrained_spec(tmp_path, "loose", "latency_ms <= 1000", 3, epochs=90)), "--storage", url,
                    timeout=600)
    assert loose.returncode == 0, loose.stdout[-3000:] + loose.stderr[-3000:]
    trained = states(url, "loose")
    assert [t.state for t in trained].count(TrialState.COMPLETE) >= 3
    assert not [t for t in trained if t.state == TrialState.PRUNED]
    assert all(t.user_attrs["pretrain"]["latency_ms"] > 0 for t in trained)  # measured before training, kept

    impossible = run_cli("launch", str(constrained_spec(tmp_path, "impossible", "latency_ms <= 0.00001", 4)),
                         "--storage", url, timeout=600)
    assert impossible.returncode == 0, impossible.stdout[-3000:] + impossible.stderr[-3000:]
    trials = states(url, "impossible")
    assert len(trials) >= 4 and all(t.state == TrialState.PRUNED for t in trials)
    for trial in trials:
        assert trial.user_attrs[pruned.REASON_ATTR].startswith("infeasible before training: latency_ms ")
        assert trial.user_attrs[pruned.EPOCH_ATTR] == 0
        assert "train_seconds" not in trial.user_attrs and not any(k.startswith("rung_") for k in trial.user_attrs)
        # What the sampler learns from: Optuna's constraint values, positive (infeasible).
        assert list(trial.constraints.values()) == [pytest.approx(trial.user_attrs["pretrain"]["latency_ms"] - 0.00001)]
    # A measurement instead of a training: a fraction of a trained trial's time.
    check_s = statistics.median(t.user_attrs["pretrain"]["seconds"] for t in trials)
    train_s = statistics.median(t.user_attrs["train_seconds"] for t in trained)
    assert check_s < 0.5 * train_s, (check_s, train_s)
    out = impossible.stdout
    assert f"0 COMPLETE, 0 FAIL, {len(trials)} PRUNED ({len(trials)} before training)" in out
    assert f"stopped after {len(trials)} trials infeasible before training (budget.max_infeasible_trials = 4): " \
           "latency_ms <= 1e-05 not met, the closest measured latency_ms " in out
    status = run_cli("status", "impossible", "--storage", url)
    assert f"PRUNED={len(trials)} ({len(trials)} before training)" in status.stdout
    front = run_cli("front", "impossible", "--storage", url)
    assert front.returncode == 0 and "0 on the Pareto front of 0 feasible trials" in front.stdout


# Objectives whose static part is exact (size), so a rung's verdict does not depend on
# latency noise; known good and bad configs run first (a warm start) so that the
# rungs see dominated trials whatever the sampler draws.
RUNG_SPEC = {
    "objectives": {"accuracy": "maximize", "size_kb": "minimize"},
    "space": {
        "architecture": MLP,
        "pruning": {"kinds": ["none"]},
        "quantization": {"modes": ["none"]},
        "schedule": {"optimizers": ["sgd", "adam"], "lr": {"low": 1e-5, "high": 0.03, "log": True}, "schedules": ["constant"]},
    },
}


def rung_spec(name: str, trials: int, **budget):
    # No baseline: the scripted seeds below are the study's first trials.
    data = tiny_spec_dict(name=name, baseline={"enabled": False}, **RUNG_SPEC)
    # One rung, at epoch 1, keeping the top quarter: a bad seed judged beside its good
    # twin (same size, far lower accuracy) is never in it.
    data["budget"] = {"trials": trials, "concurrency": 2, "epochs": 4, "early_stopping": "moasha",
                      "grace_epochs": 1, "reduction_factor": 4, **budget}
    return data


def seeds() -> list[warmstart.Seed]:
    """Two good configs of different sizes, then each architecture again with a learning
    rate too small to learn anything in an epoch: dominated at the first rung."""
    good = {"optimizer": "adam", "lr": 0.01}
    bad = {"optimizer": "sgd", "lr": 1e-5}
    arch = {"family": "mlp", "depth": 1, "batch_norm": False}
    big, small = {**arch, "width": 32}, {**arch, "width": 8}
    return [warmstart.Seed({**arch, **recipe}, f"seed {i}") for i, (arch, recipe) in
            enumerate([(big, good), (small, good), (big, bad), (small, bad)])]


def test_moasha_study_ends_with_pruned_trials_off_the_front(ray_local, tmp_path):
    from search.driver.launcher import launch

    url = f"sqlite:///{tmp_path / 'm.db'}"
    # One slot: each bad seed reaches the rung after its good twin. With two, a slot's
    # first trial can be seconds slower (its worker's imports, on a busy machine) than
    # the other slot's next two, so a bad seed reached the rung before its twin and,
    # judged beside the trials there, was rightly kept.
    spec = from_dict(rung_spec("rungs", 4, concurrency=1))
    summary = launch(spec, storage_url=url, enqueue=seeds())
    study = optuna.load_study(study_name="rungs", storage=url)
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    stopped = [t for t in trials if t.state == TrialState.PRUNED]
    assert summary.complete == len(complete) >= 4 and not summary.interrupted
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.FAIL)]
    # The two bad seeds are dominated at the first rung by their good twins.
    assert {2, 3} <= {t.number for t in stopped}
    assert summary.pruned_at_rung == len(stopped) and summary.pruned_before_training == 0
    for trial in stopped:
        record = trial.user_attrs["rung_1"] if trial.user_attrs[pruned.EPOCH_ATTR] == 1 else None
        assert trial.values is None
        assert trial.user_attrs[pruned.REASON_ATTR].startswith(f"dominated at rung epoch {trial.user_attrs[pruned.EPOCH_ATTR]}: ")
        if record is not None:
            assert record["promoted"] is False and record["ahead"] >= record["keep"]
            assert set(record["values"]) == {"accuracy", "size_kb"}
        assert "accuracy" not in trial.user_attrs  # never measured as if it had finished
    for trial in complete:  # the rung a finished trial passed is recorded, promoted
        assert trial.user_attrs["rung_1"]["promoted"] is True
    # Pruned trials are on no front: not Optuna's, not paretune's.
    numbers = {t.number for t in stopped}
    assert not numbers & {t.number for t in study.best_trials}
    assert not numbers & {t.number for t in pareto.study_front(study)}
    front = run_cli("front", "rungs", "--storage", url, "--json")
    assert front.returncode == 0, front.stderr
    import json

    assert not numbers & {t["number"] for t in json.loads(front.stdout)["trials"]}
    status = run_cli("status", "rungs", "--storage", url)
    assert f"PRUNED={len(stopped)} ({len(stopped)} at a rung)" in status.stdout


def test_kill_the_driver_mid_search_then_resume_keeps_pruned_trials_pruned(tmp_path):
    name = "rungs-killed"
    spec = write_toml(tmp_path / f"{name}.toml", rung_spec(name, 6))
    files = []
    for i, seed in enumerate(seeds()):
        files += ["--enqueue", str(Path(tmp_path / f"seed{i}.toml"))]
        (tmp_path / f"seed{i}.toml").write_text(dumps({"params": seed.params}))
    url = f"sqlite:///{tmp_path / 'k.db'}"
    proc = start_driver(spec, url, *files)

    def pruned_and_running() -> bool:
        trials = states(url, name)
        return any(t.state == TrialState.PRUNED for t in trials) and any(t.state == TrialState.RUNNING for t in trials)

    assert wait_for(pruned_and_running), proc.communicate()[0][-3000:]
    kill_group(proc)
    before = {t.number: t for t in states(url, name)}
    was_pruned = {n: t for n, t in before.items() if t.state == TrialState.PRUNED}
    recorded_before = [t for t in before.values() if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and "rung_1" in t.user_attrs]

    resumed = run_cli("launch", str(spec), "--storage", url, timeout=600,
                      env={"PARETUNE_HEARTBEAT_S": "1", "PARETUNE_LEASE_S": "4"})
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    after = {t.number: t for t in states(url, name)}
    assert not [t for t in after.values() if t.state == TrialState.RUNNING]
    assert sum(t.state == TrialState.COMPLETE for t in after.values()) >= 6
    for number, trial in was_pruned.items():  # no PRUNED trial became anything else, its record intact
        assert after[number].state == TrialState.PRUNED
        assert after[number].user_attrs == trial.user_attrs
    # The resumed driver ranked its trials against the rung table in the storage: the
    # first trial it ran saw every record the killed driver had left.
    new = sorted((t for n, t in after.items() if n not in before and "rung_1" in t.user_attrs), key=lambda t: t.number)
    assert new, "the resumed driver recorded no rung"
    assert new[0].user_attrs["rung_1"]["of"] >= 1 + len(recorded_before)
    stopped = [t for t in after.values() if t.state == TrialState.PRUNED]
    study = optuna.load_study(study_name=name, storage=url)
    assert not {t.number for t in stopped} & {t.number for t in study.best_trials}

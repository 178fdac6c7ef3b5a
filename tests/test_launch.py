"""End to end: a small study runs on a real local Ray, every trial lands COMPLETE in a
real SQLite file with three objective values, readable by plain Optuna."""

from __future__ import annotations

import math
import re

import optuna
import pytest
from optuna.trial import TrialState

from search.core.spec import from_dict
from search.driver.launcher import launch
from tests.conftest import tiny_spec_dict

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def finished_study(ray_local, tmp_path_factory):
    db = tmp_path_factory.mktemp("e2e") / "paretune.db"
    # Seed 1: the seeded sampler's first configs include trainable ones (with seed 0 every
    # trial of this 2-epoch budget drew a mobilenet without batch norm on low-lr SGD: 10%).
    # Early stopping off: these tests read a search whose trials all train to the end
    # (early_stopping = "auto" has its own, tests/test_rung_trust.py).
    spec = from_dict(tiny_spec_dict(name="e2e", seed=1, constraints=["latency_ms <= 50"], budget={"early_stopping": "none"}))
    told = []
    summary = launch(spec, storage_url=f"sqlite:///{db}", on_told=told.append)
    return summary, f"sqlite:///{db}", told


def test_all_trials_complete_with_three_objectives(finished_study):
    summary, url, told = finished_study
    assert summary.complete == 6 and not summary.interrupted and summary.failed_this_run == 0
    study = optuna.load_study(study_name="e2e", storage=url)  # plain Optuna reads it
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    assert len(told) == 6
    for t in trials:
        assert len(t.values) == 3 and all(math.isfinite(v) for v in t.values)
        accuracy, latency_ms, energy_mj = t.values
        assert 0.0 <= accuracy <= 1.0 and latency_ms > 0 and energy_mj > 0
        assert t.user_attrs["energy_source"] == "estimate"  # no RAPL on this machine
        assert t.user_attrs["latency_p90_ms"] >= latency_ms
        assert t.user_attrs["params"] > 0 and t.user_attrs["macs"] > 0 and t.user_attrs["size_kb"] > 0
        assert t.user_attrs["hostname"] and t.user_attrs["cpu_model"]
        assert len(t.user_attrs["constraints"]) == 1
        assert t.user_attrs["constraints"][0] == pytest.approx(latency_ms - 50)
    assert study.user_attrs["objectives"] == ["accuracy", "latency_ms", "energy_mj"]
    assert max(t.values[0] for t in trials) > 0.5  # something learned (chance is 0.1)


def test_each_trial_says_where_its_time_went_and_the_phases_add_up(finished_study):
    from search.trial import timing

    _, url, _ = finished_study
    for t in optuna.load_study(study_name="e2e", storage=url).get_trials():
        parts = timing.breakdown(t)
        assert parts is not None, t.user_attrs.get(timing.ATTR)
        duration = (t.datetime_complete - t.datetime_start).total_seconds()
        assert sum(parts.values()) == pytest.approx(duration, abs=2e-3)
        # What the named phases do not cover stays within 5% of the trial's duration.
        assert abs(parts["other"]) <= 0.05 * duration, parts
        assert parts["train"] > 0 and parts["measure"] > 0 and parts["dispatch"] >= 0 and parts["store"] > 0
        assert parts["report"] == 0  # no rung, so no per-epoch report waits on the search


def test_quantized_trials_really_are_quantized(finished_study):
    _, url, _ = finished_study
    for t in optuna.load_study(study_name="e2e", storage=url).get_trials():
        assert t.user_attrs["quantized"] == (t.params.get("quant_mode", "none") != "none")  # the baseline has none


def test_launch_again_resumes_without_rerunning(finished_study, ray_local):
    summary, url, _ = finished_study
    spec = from_dict(tiny_spec_dict(name="e2e", seed=1, constraints=["latency_ms <= 50"], budget={"trials": 7}))
    again = launch(spec, storage_url=url)
    trials = optuna.load_study(study_name="e2e", storage=url).get_trials()
    assert again.complete == 7 and len(trials) == 7  # exactly one more trial, the first six untouched
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(params)) == len(params)


def test_diverging_trials_fail_with_reason_and_search_goes_on(ray_local, tmp_path):
    # lr of 1e4 makes SGD blow up: every trial raises inside, none may stay RUNNING. Batch
    # norm keeps units alive (without it one step can kill every ReLU: a dead net's loss
    # stays finite, and it completes at chance).
    spec = from_dict(
        tiny_spec_dict(
            name="diverge",
            budget={"trials": 2, "concurrency": 2, "epochs": 2, "max_failed_trials": 3},
            space={"architecture": {"families": ["mlp"], "batch_norm": [True]}, "schedule": {"optimizers": ["sgd"], "lr": {"low": 1e4, "high": 1e5, "log": True}, "schedules": ["constant"]}},
        )
    )
    summary = launch(spec, storage_url=f"sqlite:///{tmp_path / 'd.db'}")
    trials = optuna.load_study(study_name="diverge", storage=f"sqlite:///{tmp_path / 'd.db'}").get_trials()
    # Stops once 3 have failed; a trial already in flight may add one more.
    assert summary.failed_this_run in (3, 4) and summary.complete == 0 and not summary.interrupted
    assert [t.state for t in trials] == [TrialState.FAIL] * summary.failed_this_run
    assert all("diverged" in t.user_attrs["fail_reason"] for t in trials)


def test_study_teacher_is_trained_once_and_shipped_to_the_trials(ray_local, tmp_path):
    spec = from_dict(
        tiny_spec_dict(
            name="kd",
            budget={"trials": 2},
            space={
                **tiny_spec_dict()["space"],
                "distillation": {"enabled": True, "teacher_width": 8, "teacher_depth": 1, "teacher_epochs": 2},
                "runtime": {"enabled": True, "runtimes": ["torchscript"]},
            },
        )
    )
    url = f"sqlite:///{tmp_path / 'kd.db'}"
    assert launch(spec, storage_url=url).complete == 2
    trials = optuna.load_study(study_name="kd", storage=url).get_trials()
    (base,) = [t for t in trials if t.user_attrs.get("baseline")]
    assert "kd_alpha" not in base.params and base.user_attrs.get("teacher_source") is None  # the baseline has no teacher
    for t in trials:
        if t.user_attrs.get("baseline"):
            continue
        assert "kd_alpha" in t.params
        # "study": the launcher's teacher reached the worker; "process" would mean it was retrained there.
        assert t.user_attrs["teacher_source"] == "study"
        assert t.user_attrs["runtime"] == "torchscript"


@pytest.mark.slow
def test_cli_launch_shows_progress_and_ends_with_the_front(tmp_path):
    """Not a terminal (a CI log): plain progress lines with counts and ETA while it runs,
    then what this run stored, the front with its knee, the hypervolume and the export
    command; none of Ray's messages that do not apply."""
    from search.results import pareto as front
    from tests.conftest import run_cli, write_toml

    spec = write_toml(tmp_path / "shown.toml", tiny_spec_dict(name="shown", budget={"trials": 4, "concurrency": 2, "epochs": 3}))
    url = f"sqlite:///{tmp_path / 'shown.db'}"
    result = run_cli("launch", str(spec), "--storage", url, "--progress-every", "1", timeout=600)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("progress ")]
    assert len(lines) >= 2, out[-4000:]
    assert all(re.search(r"^progress \d+:\d\d: [0-4]/4 COMPLETE, \d running, 0 failed, 0 pruned; ETA", line) for line in lines)
    assert any(re.search(r"ETA \d+:\d\d", line) for line in lines)  # once a trial has finished
    assert "this run stored 4 trials in " in result.stdout and ": 4 COMPLETE, 0 FAIL, 0 PRUNED" in result.stdout
    study = optuna.load_study(study_name="shown", storage=url)
    report = front.report(study)
    knee = report.knee.number
    assert f"study shown: 4/4 COMPLETE in {url}; {len(report.front)} on the Pareto front of 4 feasible trials" in result.stdout
    assert "trial  accuracy  latency_ms  energy_mj  size_kb  model" in result.stdout
    for trial in report.front:
        marks = ("[*]" if trial.number == knee else "") + ("b" if trial.user_attrs.get("baseline") else "")
        assert re.search(rf"^{trial.number}{marks}\s+{trial.values[0]:.4g}\s", result.stdout, re.M)
    assert f"* knee (trial {knee})" in result.stdout
    base = report.baseline  # the baseline runs first; its row is marked, and the knee's trade is stated against it
    assert base is not None and base.number == 0
    assert re.search(rf"^0{'[*]' if knee == 0 else ''}b\s+{base.values[0]:.4g}\s", result.stdout, re.M)
    assert f"b baseline (trial 0, your model as it runs today): accuracy={base.values[0]:.4g}" in result.stdout
    assert f"hypervolume {report.hypervolume:.6g} with reference point" in result.stdout
    assert f"export the knee (trial {knee}): paretune export shown --storage {url} --out shown-best.toml" in result.stdout
    assert "Token authentication is enabled" not in out and "Tuner.restore" not in out

"""Train once, compress many: variants of one training, each its own Optuna trial."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState

from search.core.errors import UsageError
from search.core.spec import from_dict
from search.trial import variants
from tests.conftest import tiny_spec_dict

TRAINING_DIMENSIONS = ("family", "width", "depth", "batch_norm", "kernel", "optimizer", "lr", "schedule", "batch_size",
                       "weight_decay", "dropout", "label_smoothing", "use_l1", "l1")
POST_TRAINING = ("prune_kind", "prune_ratio", "quant_mode", "runtime")


def _shared(params: dict) -> dict:
    return {k: v for k, v in params.items() if not k.startswith(POST_TRAINING)}


@pytest.fixture(scope="module")
def variant_study(ray_local, tmp_path_factory):
    from search.driver.launcher import launch

    db = tmp_path_factory.mktemp("variants") / "v.db"
    spec = from_dict(tiny_spec_dict(name="variants", seed=1, budget={"trials": 8, "variants_per_training": 4},
                                    space={"runtime": {"enabled": True, "runtimes": ["eager", "torchscript"]}}))
    told = []
    summary = launch(spec, storage_url=f"sqlite:///{db}", on_told=told.append)
    return summary, optuna.load_study(study_name="variants", storage=f"sqlite:///{db}"), told


@pytest.mark.ray
def test_variants_share_one_training_and_differ_only_after_it(variant_study):
    summary, study, told = variant_study
    trials = study.get_trials()
    assert summary.complete == 8 and len(told) == 8 and all(t.state == TrialState.COMPLETE for t in trials)
    groups: dict[int, list] = {}
    for trial in trials:
        groups.setdefault(trial.user_attrs[variants.TRAINING_ATTR], []).append(trial)
    assert sorted(len(g) for g in groups.values()) == [4, 4]  # 2 trainings -> 8 trials
    for training, group in groups.items():
        holder = next(t for t in group if t.number == training)
        assert {t.user_attrs["seed"] for t in group} == {holder.user_attrs["seed"]}
        assert all(_shared(t.params) == _shared(holder.params) for t in group)
        # One training: every trial of the group carries the same worker phases.
        assert len({json.dumps(t.user_attrs["timing"]["phases"], sort_keys=True) for t in group}) == 1
        post = {tuple(sorted((k, v) for k, v in t.params.items() if k.startswith(POST_TRAINING))) for t in group}
        assert len(post) > 1  # the sampler proposed different post-training steps
    # The baseline's group: the baseline itself (no compression) and three compressed variants of it.
    (base,) = [t for t in trials if t.user_attrs.get("baseline")]
    assert base.number == 0 and not any(k.startswith(POST_TRAINING) for k in base.params)
    assert len(groups[0]) == 4


@pytest.mark.ray
def test_a_variant_retrained_alone_is_the_same_model(variant_study):
    from search.tasks.data import load_task
    from search.tasks.plugins import suggest_params
    from search.trial.pipeline import run_pipeline

    _, study, _ = variant_study
    spec = from_dict(study.user_attrs["spec"])
    task = load_task(spec)
    variant = next(t for t in study.get_trials() if t.user_attrs[variants.TRAINING_ATTR] != t.number)
    params = suggest_params(optuna.trial.FixedTrial(variant.params), spec, task.kind)
    result = run_pipeline(params, task, spec, variant.user_attrs["seed"])
    assert result.metrics.accuracy == pytest.approx(variant.values[0], abs=0.02)


@pytest.mark.ray
def test_the_end_summary_counts_trainings_and_variants(variant_study):
    _, study, _ = variant_study
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert variants.count_words(variants.trainings(complete), len(complete), 3) == "2 trainings → 8 variants, 3 on the front"


def test_run_group_derives_each_member_from_the_same_trained_weights():
    from search.tasks.data import load_task
    from search.trial.pipeline import run_group, run_pipeline

    spec = from_dict(tiny_spec_dict(space={"architecture": {"families": ["mlp"], "width": [16, 16], "depth": [1, 1]}}))
    task = load_task(spec)
    shared = {"family": "mlp", "width": 16, "depth": 1, "batch_norm": True, "optimizer": "adam", "lr": 0.01,
              "schedule": "constant", "batch_size": 64, "weight_decay": 0.0, "dropout": 0.0, "label_smoothing": 0.0,
              "use_l1": False}
    members = [{**shared, "prune_kind": "none", "quant_mode": "none"},
               {**shared, "prune_kind": "structured", "prune_ratio": 0.5, "quant_mode": "none"},
               None,
               {**shared, "prune_kind": "none", "quant_mode": "dynamic"}]
    results = run_group(members, task, spec, seed=3)
    assert results[2] is None
    plain, pruned, dynamic = results[0], results[1], results[3]
    assert pruned.metrics.params < plain.metrics.params  # structured pruning really shrank the copy
    assert dynamic.metrics.quantized and not plain.metrics.quantized
    assert plain.metrics.params == dynamic.metrics.params  # the copies started from the same weights
    alone = run_pipeline(members[1], task, spec, seed=3)
    assert alone.metrics.accuracy == pytest.approx(pruned.metrics.accuracy, abs=1e-9)
    assert alone.metrics.params == pruned.metrics.params


def test_gradual_pruning_cannot_vary_between_variants():
    spec = from_dict(tiny_spec_dict(budget={"variants_per_training": 3},
                                    space={"pruning": {"kinds": ["none", "gradual"]}}))
    with pytest.raises(UsageError, match=r"^budget.variants_per_training = 3: space.pruning: gradual pruning acts during training"):
        variants.check(spec)
    variants.check(from_dict(tiny_spec_dict(budget={"variants_per_training": 1}, space={"pruning": {"kinds": ["gradual"]}})))


@pytest.mark.ray
def test_kill_9_during_variants_then_resume_loses_nothing_and_counts_nothing_twice(tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.test_faults import SHORT_LEASE, fault_spec, kill_group, start_driver, states, wait_for

    spec = fault_spec(tmp_path, "vkill", variants_per_training=3, trials=9)
    url = f"sqlite:///{tmp_path / 'vkill.db'}"
    proc = start_driver(spec, url)

    def variants_running() -> bool:  # a training with its variants in flight, after one group finished
        trials = states(url, "vkill")
        running = [t for t in trials if t.state == TrialState.RUNNING and variants.TRAINING_ATTR in t.user_attrs]
        return sum(t.state == TrialState.COMPLETE for t in trials) >= 3 and len(running) >= 3

    assert wait_for(variants_running), proc.communicate()[0][-3000:]
    kill_group(proc)
    cut = [t.number for t in states(url, "vkill") if t.state == TrialState.RUNNING]
    final = subprocess.run([sys.executable, "-m", "search", "launch", str(spec), "--storage", url], cwd=ROOT,
                           env={**__import__("os").environ, **SHORT_LEASE}, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    trials = states(url, "vkill")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 9  # the exact budget: no variant counted twice
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    retries = {t.user_attrs["retry_of"]: t for t in trials if "retry_of" in t.user_attrs}
    for number in cut:  # every trial the kill cut short (variants too) failed as interrupted and ran again once
        trial = trials[number]
        assert trial.state == TrialState.FAIL and trial.user_attrs["fail_reason"].startswith("interrupted")
        if "seed" in trial.user_attrs:
            assert retries[number].params == trial.params and retries[number].state == TrialState.COMPLETE

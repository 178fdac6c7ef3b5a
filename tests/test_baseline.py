"""The baseline (the user's model as it runs today), the knee within `max_drop` of
its accuracy, and trained weights to start from."""

from __future__ import annotations

import optuna
import pytest
import torch
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from search.core.errors import UsageError
from search.core.spec import from_dict
from search.results import pareto
from search.tasks import baseline, weights
from search.trial import preflight
from tests.conftest import run_cli, tiny_spec_dict, write_toml


def test_baseline_params_leave_out_compression_and_take_the_middle_of_ranges():
    spec = from_dict(tiny_spec_dict(space={"schedule": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}},
                                           "runtime": {"enabled": True}}))
    fixed = baseline.optuna_params(spec, "image")
    assert not {"prune_kind", "prune_ratio", "runtime"} & set(fixed)
    assert not any(k.startswith("quant_mode") for k in fixed)
    assert fixed["family"] == "mlp"  # the first choice
    assert fixed["lr"] == pytest.approx(1e-3)  # the geometric middle of a log range
    assert fixed["width"] == 12 and fixed["depth"] in (1, 2)  # [8, 16] -> 12
    params = baseline.params(spec, "image")
    assert params["family"] == "mlp" and "quant_mode" not in params and "prune_kind" not in params


def test_given_baseline_params_are_checked_against_the_space():
    spec = from_dict(tiny_spec_dict(baseline={"params": {"family": "mobilenet", "width": 16}}))
    assert baseline.optuna_params(spec, "image")["family"] == "mobilenet"
    with pytest.raises(UsageError, match=r"baseline.params.width: 99 is not in the space of width"):
        baseline.optuna_params(from_dict(tiny_spec_dict(baseline={"params": {"width": 99}})), "image")
    with pytest.raises(UsageError, match=r"baseline.params.widht: not a param of this space"):
        baseline.optuna_params(from_dict(tiny_spec_dict(baseline={"params": {"widht": 8}})), "image")


def test_enqueue_queues_one_marked_baseline_first_and_only_once():
    spec = from_dict(tiny_spec_dict())
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    assert baseline.enqueue(study, spec, "image") is True
    assert baseline.enqueue(study, spec, "image") is False  # the study has one
    (waiting,) = study.get_trials(states=(TrialState.WAITING,))
    assert waiting.user_attrs == {"baseline": True} and waiting.number == 0
    assert baseline.enqueue(study, from_dict(tiny_spec_dict(baseline={"enabled": False})), "image") is False
    assert baseline.enqueue(optuna.create_study(), spec, "table") is False  # a lookup table has no model to run


def _trial(number: int, accuracy: float, latency: float, energy: float, **attrs) -> optuna.trial.FrozenTrial:
    trial = create_trial(values=[accuracy, latency, energy], params={"x": 0.5},
                         distributions={"x": FloatDistribution(0, 1)}, user_attrs=attrs)
    trial.number = number
    return trial


OBJECTIVES = pareto.Objectives(("accuracy", "latency_ms", "energy_mj"), ("maximize", "minimize", "minimize"))


def test_knee_is_taken_within_max_drop_of_the_baseline():
    base = _trial(0, 0.95, 10.0, 10.0, baseline=True)
    front = [_trial(1, 0.97, 9.0, 9.0), _trial(2, 0.945, 2.0, 2.0), _trial(3, 0.90, 0.5, 0.5)]
    choice = pareto.choose_knee(front + [base], OBJECTIVES, baseline=base, max_drop=0.01)
    assert choice.trial.number == 2 and {t.number for t in choice.among} == {0, 1, 2}  # not 3: 5 pp below
    assert choice.fallback is None and "within 1 pp of the baseline's accuracy (trial 0)" in choice.rule
    # A looser drop lets the fast, less accurate trial in; a tighter one keeps only what is as accurate.
    assert {t.number for t in pareto.choose_knee(front, OBJECTIVES, baseline=base, max_drop=0.06).among} == {1, 2, 3}
    assert pareto.choose_knee(front, OBJECTIVES, baseline=base, max_drop=0.001).trial.number == 1


def test_no_front_trial_within_max_drop_falls_back_and_says_so():
    base = _trial(0, 0.99, 10.0, 10.0, baseline=True)
    front = [_trial(1, 0.95, 2.0, 2.0), _trial(2, 0.60, 0.5, 0.5)]
    choice = pareto.choose_knee(front, OBJECTIVES, accuracy_within=0.05, baseline=base, max_drop=0.01)
    assert choice.trial.number == 1  # within 5 pp of the best front accuracy, not the near-useless one
    assert choice.fallback == "no front trial is within 1 pp of the baseline's accuracy (0.99, trial 0)"
    assert choice.rule == "within 5 pp of the best accuracy"


def test_trade_is_stated_against_the_baseline():
    base = _trial(0, 0.95, 10.0, 10.0, baseline=True, size_kb=120.0)
    chosen = _trial(2, 0.946, 2.5, 2.0, size_kb=10.0)
    words = pareto.trade_words([chosen], chosen, OBJECTIVES, base)
    assert words == "\u22120.4 pp accuracy, 4.0× faster, 12× smaller than the baseline (trial 0)"


def test_weights_that_do_not_fit_name_the_first_mismatch():
    from torch import nn

    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    assert weights.mismatch(model, model.state_dict()) is None
    other = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3)).state_dict()
    assert weights.mismatch(model, other).startswith("0.weight is [16, 4] in the weights but [8, 4] in the model (+2 more)")
    partial = {k: v for k, v in model.state_dict().items() if k != "2.bias"}
    assert weights.mismatch(model, {**partial, "extra": torch.zeros(1)}) == "missing 2.bias; unexpected extra"


def test_weights_load_from_a_checkpoint_dict_or_a_function(tmp_path):
    from torch import nn

    model = nn.Linear(3, 2)
    torch.save({"epoch": 3, "model_state_dict": model.state_dict()}, tmp_path / "ckpt.pt")
    loaded = weights.load(str(tmp_path / "ckpt.pt"))
    assert torch.equal(loaded["weight"], model.weight.detach())
    (tmp_path / "loader.py").write_text("import torch\ndef load():\n    return torch.nn.Linear(3, 2)\n")
    assert set(weights.load(f"{tmp_path / 'loader.py'}:load")) == {"weight", "bias"}
    (tmp_path / "junk.pt").write_text("not torch")
    with pytest.raises(UsageError, match=r"^model.weights: .*junk.pt: cannot be read as saved tensors"):
        weights.load(str(tmp_path / "junk.pt"))


def test_launch_with_weights_that_do_not_fit_is_one_line_exit_2_before_anything_is_written(tmp_path):
    from torch import nn

    torch.save(nn.Linear(3, 2).state_dict(), tmp_path / "wrong.pt")
    spec = write_toml(tmp_path / "spec.toml", tiny_spec_dict(name="misfit", model={"weights": "wrong.pt"}))
    db = tmp_path / "misfit.db"
    result = run_cli("launch", str(spec), "--storage", f"sqlite:///{db}", timeout=120)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: model.weights: ") and "does not fit the model" in lines[0], lines
    assert "missing" in lines[0] or "in the weights but" in lines[0]
    assert "Traceback" not in result.stderr and not db.exists()


def test_a_trial_from_weights_starts_from_them_and_trains_no_epoch():
    from search.core.spec import ModelSource
    from search.tasks.data import load_task
    from search.tasks.plugins import Plugins
    from search.trial.pipeline import build_and_train, training_epochs

    spec = from_dict(tiny_spec_dict(space={"architecture": {"families": ["mlp"], "width": [8, 8], "depth": [1, 1]}}))
    task = load_task(spec)
    params = baseline.params(spec, task.kind)
    trained, _, _ = build_and_train(params, task, spec, seed=0)
    state = {k: v.clone() for k, v in trained.state_dict().items()}
    spec_w = spec.model_copy(update={"model": ModelSource(weights="given.pt")})
    assert training_epochs(spec) == 2 and training_epochs(spec_w) == 0
    plugins = Plugins(weights=state)
    loaded, _, _ = build_and_train(params, task, spec_w, seed=5, plugins=plugins)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key]), key  # the loaded model, untouched by any training


def test_weights_of_a_built_in_family_fit_its_baseline_model_and_a_misfit_is_refused():
    from search.core.spec import ModelSource
    from search.tasks.data import load_task
    from search.tasks.plugins import Plugins, dimensions, suggest_context
    from search.trial.pipeline import trial_context

    spec = from_dict(tiny_spec_dict(baseline={"params": {"family": "mlp", "width": 16, "depth": 1}}))
    task = load_task(spec)
    params = baseline.params(spec, task.kind)
    builder = next(d for d in dimensions(None) if d.stage == "build" and d.active(suggest_context(spec, task.kind)))
    model = builder.apply(None, params, trial_context(params, task, spec, 0, Plugins()))
    spec_w = spec.model_copy(update={"model": ModelSource(weights="mlp.pt")})
    preflight.check_weights(spec_w, task, Plugins(weights=model.state_dict()))  # fits: no error
    narrower = from_dict(tiny_spec_dict(baseline={"params": {"family": "mlp", "width": 8, "depth": 1}}))
    with pytest.raises(UsageError, match=r"^model.weights: mlp.pt does not fit the model built with the baseline params "
                                         r"\(family=mlp, width=8, .*\): .* in the weights but .* in the model"):
        preflight.check_weights(narrower.model_copy(update={"model": ModelSource(weights="mlp.pt")}), task,
                      Plugins(weights=model.state_dict()))


def test_baseline_file_sets_the_baseline_params(tmp_path):
    from search.cli import _with_baseline

    spec = from_dict(tiny_spec_dict(baseline={"enabled": False}))
    (tmp_path / "today.toml").write_text('[params]\nfamily = "mobilenet"\nwidth = 16\n')
    mine = _with_baseline(spec, tmp_path / "today.toml")
    assert mine.baseline.enabled and baseline.optuna_params(mine, "image")["family"] == "mobilenet"
    (tmp_path / "flat.toml").write_text('family = "mlp"\n')
    assert _with_baseline(spec, tmp_path / "flat.toml").baseline.params == {"family": "mlp"}
    (tmp_path / "bad.toml").write_text('[space]\n[space.x]\ny = 1\n')
    with pytest.raises(UsageError, match=r"bad.toml: expected a `params` table"):
        _with_baseline(spec, tmp_path / "bad.toml")


def test_a_search_from_weights_distills_from_the_loaded_model():
    from search.core.spec import ModelSource
    from search.tasks.data import load_task
    from search.tasks.plugins import Plugins
    from search.trial.pipeline import build_and_train

    space = {"architecture": {"families": ["mlp"], "width": [8, 8], "depth": [1, 1]},
             "distillation": {"enabled": True}}
    spec = from_dict(tiny_spec_dict(space=space)).model_copy(update={"model": ModelSource(weights="given.pt")})
    task = load_task(spec)
    params = baseline.params(spec, task.kind)
    trained, _, _ = build_and_train(params, task, from_dict(tiny_spec_dict(space=space)), seed=0)
    state = {k: v.clone() for k, v in trained.state_dict().items()}
    distilling = {**params, "kd_temperature": 2.0, "kd_alpha": 0.5}
    _, ctx, _ = build_and_train(distilling, task, spec, seed=1, plugins=Plugins(weights=state))
    assert ctx.info["teacher_source"] == "weights"  # no teacher trained: the loaded model is it
    assert all(torch.equal(v, state[k]) for k, v in ctx.loaded_model.state_dict().items())
    assert not any(p.requires_grad for p in ctx.loaded_model.parameters())
    from spaces.distillation import Distillation

    assert Distillation().prepare_study(spec, task, None) is None  # the launch trains no teacher either

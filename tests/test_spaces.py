"""The combined space: suggest stays inside the spec's bounds and conditions across
dimensions; a bad section is refused; the protocol's hooks default to doing nothing."""

from __future__ import annotations

import optuna
import pytest

import spaces
from search.core.spec import from_dict, load
from search.tasks.plugins import suggest_params
from tests.conftest import ROOT, sample_many, tiny_spec_dict
from tests.dims import EXTRA_KEYS

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_suggest_respects_bounds_and_conditions():
    spec = from_dict(
        tiny_spec_dict(
            space={
                "architecture": {"families": ["mlp", "cnn"], "width": [8, 12], "depth": [1, 2], "kernels": [5]},
                "pruning": {"kinds": ["none", "structured"], "ratio": [0.2, 0.4]},
                "quantization": {"modes": ["none", "static"]},
                "schedule": {"optimizers": ["adamw"], "lr": {"low": 1e-3, "high": 1e-2, "log": True}},
                "regularization": {"dropout": [0.0, 0.1], "l1": [False]},
            }
        )
    )
    configs = sample_many(spec)
    assert {c["family"] for c in configs} == {"mlp", "cnn"}
    for c in configs:
        assert 8 <= c["width"] <= 12 and 1 <= c["depth"] <= 2
        assert ("kernel" in c) == (c["family"] == "cnn") and c.get("kernel", 5) == 5
        assert c["prune_kind"] in ("none", "structured")
        assert ("prune_ratio" in c) == (c["prune_kind"] != "none")
        assert 0.2 <= c.get("prune_ratio", 0.3) <= 0.4
        assert c["quant_mode"] in ("none", "static") and c["optimizer"] == "adamw"
        assert 1e-3 <= c["lr"] <= 1e-2 and 0 <= c["dropout"] <= 0.1 and "l1" not in c


def test_optional_dimensions_are_off_by_default_and_the_runtime_searches_what_ships():
    """Distillation and augmentation add nothing unless enabled; the runtime is searched
    by default among the forms `paretune train` ships, never eager unless asked."""
    spec = from_dict(tiny_spec_dict())
    assert not (spec.space.distillation.enabled or spec.space.augmentation.enabled)
    assert spec.space.runtime.enabled and spec.space.runtime.runtimes == ["torchscript", "onnxruntime"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = set()
    for _ in range(20):
        trial = study.ask()
        config = suggest_params(trial, spec, "image")
        assert not any(key in config for key in EXTRA_KEYS if key != "runtime")
        assert not any(name.startswith(("kd_", "aug_")) for name in trial.params)
        assert config["runtime"] in ("torchscript", "onnxruntime")
        assert config["runtime"] == "torchscript" or config["quant_mode"] != "qat"  # QAT has no ONNX Runtime form
        drawn.add(config["runtime"])
        study.tell(trial, 0.0)
    assert drawn == {"torchscript", "onnxruntime"}


def test_enabled_dimensions_respect_bounds_and_conditions():
    spec = from_dict(
        tiny_spec_dict(
            space={
                "architecture": {"families": ["mlp", "cnn"], "width": [8, 12], "depth": [1, 2]},
                "quantization": {"modes": ["none", "qat", "static"]},
                "distillation": {"enabled": True, "temperature": [2.0, 3.0], "alpha": [0.2, 0.4],
                                 "features": [True, False], "feature_weight": {"low": 0.5, "high": 2.0, "log": True}},
                "augmentation": {"enabled": True, "strength": [0.1, 0.2]},
                "runtime": {"enabled": True, "runtimes": ["eager", "onnxruntime", "torchscript"]},
            }
        )
    )
    configs = sample_many(spec, 60, seed=3)
    for c in configs:
        assert 2.0 <= c["kd_temperature"] <= 3.0 and 0.2 <= c["kd_alpha"] <= 0.4
        assert 0.5 <= c.get("kd_feature_weight", 1.0) <= 2.0
        assert 0.1 <= c["aug_strength"] <= 0.2
        assert c["runtime"] in ("eager", "onnxruntime", "torchscript")
        if c["quant_mode"] == "qat":  # a QAT model has no ONNX Runtime form
            assert c["runtime"] != "onnxruntime"
    assert {c["runtime"] for c in configs} == {"eager", "onnxruntime", "torchscript"}
    assert any("kd_feature_weight" in c for c in configs) and any("kd_feature_weight" not in c for c in configs)


@pytest.mark.parametrize(
    "section, message",
    [
        ({"distillation": {"alpha": [0.1, 1.5]}}, "alpha"),
        ({"distillation": {"temperature": [0.0, 2.0]}}, "temperature"),
        ({"augmentation": {"strength": [0.0, 2.0]}}, "strength"),
        ({"runtime": {"runtimes": ["tvm"]}}, "space.runtime.runtimes"),
        ({"runtime": {"enable": True}}, "unknown field"),
    ],
)
def test_bad_sections_are_rejected(section, message):
    from search.core.errors import UsageError

    with pytest.raises(UsageError, match=message):
        from_dict(tiny_spec_dict(space=section))


def test_digits_full_spec_enables_everything():
    spec = load(ROOT / "studies" / "digits_full.toml")
    space = spec.space
    assert space.distillation.enabled and space.augmentation.enabled and space.runtime.enabled
    assert "gradual" in space.pruning.kinds and "transformer" in space.architecture.families
    assert set(space.runtime.runtimes) == {"eager", "torchscript", "onnxruntime"}
    assert spec.budget.trials <= 20 and spec.budget.epochs <= 10


# --- the protocol's hooks -------------------------------------------------------------------------


def test_the_protocol_hooks_default_to_doing_nothing():
    class Plain(spaces.Dimension):
        name = "plain"

    plain, params = Plain(), {"x": 1}
    assert plain.untrained_params(params) is params
    assert plain.facts == {} and plain.record(None, None, params, None) == {}
    assert plain.preflight_models(None, spaces.SuggestContext("image")) == []
    assert plain.calibration_batches(None) == 0
    hooks = spaces.TrainingHooks()
    plain.recipe(params, hooks)
    assert hooks.make_optimizer is None and hooks.batch_size == 64
    assert plain.ship(None, "/nonexistent") is None and plain.load_shipped("model.onnx", "onnx") is None
    assert plain.trace_options(params, None) == {} and plain.model_card(params, None) == {}
    assert not plain.needs_training(None) and plain.study_work(None) == ""


def test_facts_must_say_how_each_recorded_name_is_kept():
    class Loose(spaces.Dimension):
        name = "loose"
        facts = {"clip_norm": "card"}

    with pytest.raises(ValueError, match="facts must map"):
        spaces.check_dimension(Loose())
    Loose.facts = {"clip_norm": spaces.Fact(card=True)}
    assert spaces.check_dimension(Loose()).facts["clip_norm"].card


def test_untrained_params_ask_every_dimension_and_change_nothing_in_place():
    class Warm(spaces.Dimension):
        name = "warm"

        def untrained_params(self, params):
            return {**params, "warm": False} if params.get("warm") else params

    params = {"quant_mode": "qat", "prune_kind": "gradual", "warm": True}
    out = spaces.untrained_params(params, [*spaces.builtins(), Warm()])
    assert out == {"quant_mode": "static", "prune_kind": "unstructured", "warm": False}
    assert params == {"quant_mode": "qat", "prune_kind": "gradual", "warm": True}


def test_the_builtins_facts_keep_their_metric_names_and_flags():
    from search.trial import metrics

    assert {"quantized", "runtime", "int8_kernels", "teacher_source"} <= set(spaces.facts())
    assert {"quantized", "runtime", "int8_kernels"} <= set(metrics.keys(card=True))
    assert {"quantized", "runtime", "int8_kernels"} <= set(metrics.keys(export=True))
    assert "teacher_source" in metrics.keys(export=False) and "teacher_source" not in metrics.keys(export=True)
    assert {n for n, f in spaces.facts().items() if f.untrained} == {"quantized", "runtime"}


def test_recorded_facts_read_as_metrics_and_are_stored():
    import dataclasses

    from search.trial.metrics import TrialMetrics, stored_attrs

    required = {f.name: 0 for f in dataclasses.fields(TrialMetrics)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    record = TrialMetrics(**required).update(quantized=True, runtime="eager", teacher_source=None, clip_norm=2.0,
                                             train_device="cuda")
    assert record.quantized and record.runtime == "eager" and record.train_device == "cuda"
    with pytest.raises(AttributeError):
        record.nothing_recorded
    result = record.to_result()
    assert result["quantized"] is True and "teacher_source" not in result and result["clip_norm"] == 2.0
    stored = stored_attrs(result)
    assert stored["runtime"] == "eager" and stored["clip_norm"] == 2.0  # a user dimension's fact is kept too


def test_a_lazy_module_imports_on_first_use_and_pickles_by_name():
    import copy
    import pickle

    from spaces._lazy import LazyModule

    lazy = LazyModule("json")  # any module will do; spaces use it for torch
    probed = pickle.loads(pickle.dumps(copy.deepcopy(lazy)))  # pickle and copy probe dunders only
    assert "not imported yet" in repr(probed) and "not imported yet" in repr(lazy)
    assert lazy.dumps({"a": 1}) == '{"a": 1}' and "loaded" in repr(lazy) and "not" not in repr(lazy)
    assert "not imported yet" in repr(pickle.loads(pickle.dumps(lazy)))  # the name travels, not the module
    with pytest.raises(AttributeError):
        _ = lazy.no_such_function

"""The user's own task, model, training loop and dimensions: each keeps its contract or
stops the launch with one line naming the key and the file, before Ray starts."""

from __future__ import annotations

import optuna
import pytest
import torch

from search.core.errors import UsageError
from search.core.spec import from_dict
from search.driver import launcher
from search.tasks.data import load_task
from search.tasks.plugins import resolve, suggest_params
from search.trial.pipeline import run_pipeline
from tests.conftest import ROOT, run_cli, sample_many, tiny_spec_dict, write_toml

CODE = ROOT / "tests" / "user_code"
KNOBS = {"hidden": {"low": 16, "high": 48, "log": True}, "layers": [1, 2], "act": ["relu", "tanh"]}


def user_spec(**overrides) -> dict:
    data = tiny_spec_dict(
        task={"factory": f"{CODE}/my_task.py:make"},
        model={"factory": f"{CODE}/my_model.py:build"},
        objectives={"accuracy": "maximize", "macro_f1": "maximize", "latency_ms": "minimize"},
        space={"model": KNOBS, "pruning": {"kinds": ["none", "structured"], "finetune_epochs": 1},
               "quantization": {"modes": ["none", "dynamic"]}},
    )
    data.update(overrides)
    return data


@pytest.fixture
def no_ray(monkeypatch):
    """Fail the test if anything tries to start Ray."""

    def refuse(address):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(launcher, "init_ray", refuse)


def test_user_model_knobs_are_params_and_factory_builds_them():
    spec = from_dict(user_spec())
    configs = sample_many(spec, 30, seed=2)
    for config in configs:
        assert 16 <= config["hidden"] <= 48 and config["layers"] in (1, 2) and config["act"] in ("relu", "tanh")
        assert "family" not in config and "width" not in config  # the built-in families are off
    assert {c["act"] for c in configs} == {"relu", "tanh"}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    suggest_params(trial, spec, "image")
    assert {"hidden", "layers", "act"} <= set(trial.params)  # stored in Optuna under their own names


def test_user_task_model_loop_and_dimension_in_one_trial():
    from tests.user_code import my_dims, my_train

    data = user_spec(train={"loop": f"{CODE}/my_train.py:fit"})
    data["space"]["custom"] = {"dimensions": [f"{CODE}/my_dims.py:GradClip"]}
    data["space"]["grad_clip"] = {"max_norm": [0.5, 0.5]}
    data["space"]["regularization"] = {"label_smoothing": [0.1, 0.1]}
    spec = from_dict(data)
    plugins = resolve(spec)
    assert [d.name for d in plugins.dimensions] == ["grad_clip"]
    task = load_task(spec, plugins.task)
    config = sample_many(spec, 1, seed=4, plugins=plugins)[0]
    config.update(prune_kind="structured", prune_ratio=0.5, quant_mode="dynamic", hidden=32, layers=2, act="relu",
                  optimizer="adam", lr=3e-3, schedule="cosine", batch_size=64, dropout=0.0)
    calls = plugins.train.__globals__["CALLS"]  # the lists of the modules loaded from the files
    norms = type(plugins.dimensions[0]).prepare.__globals__["NORMS"]
    result = run_pipeline(config, task, spec, seed=0, plugins=plugins)
    metrics = result.metrics
    assert [c[0] for c in calls] == [2, 1]  # the main training, then the fine-tune after pruning
    assert norms and all(after <= limit * 1.001 for limit, after in norms)  # the user dimension clipped every step
    assert 0.0 <= metrics.task_metrics["macro_f1"] <= 1.0 and metrics.accuracy > 0.3
    assert metrics.quantized and metrics.params < 64 * 32 + 33 * 32 + 33 * 10  # structured pruning shrank it
    assert result.model(torch.zeros(3, 1, 8, 8)).shape == (3, 10)  # the output layer kept its 10 classes
    assert my_train.CALLS == [] and my_dims.NORMS == []  # a file reference loads its own module, not the package's


def test_loop_that_skips_a_needed_hook_fails_the_trial_naming_it():
    data = user_spec(train={"loop": f"{CODE}/my_train.py:fit_plain_loss"})
    data["space"]["regularization"] = {"label_smoothing": [0.1, 0.1]}
    spec = from_dict(data)
    task = load_task(spec)
    config = sample_many(spec, 1, seed=1)[0]
    with pytest.raises(RuntimeError, match=r"never called hooks\.loss"):
        run_pipeline(config, task, spec, seed=0)


def test_unknown_task_metric_is_refused_before_ray(no_ray, tmp_path):
    spec = from_dict(user_spec(objectives={"accuracy": "maximize", "macro_f2": "maximize"}))
    with pytest.raises(UsageError, match=r"objectives\.macro_f2: the task's metrics\(\) returned no 'macro_f2' \(it returned: macro_f1\)"):
        launcher.launch(spec, storage_url=f"sqlite:///{tmp_path / 'x.db'}")
    assert not (tmp_path / "x.db").exists()
    with pytest.raises(UsageError, match="unknown objective 'macro_f1'"):  # only a factory task may name its own metrics
        from_dict(tiny_spec_dict(objectives={"macro_f1": "maximize"}))


BAD_CODE = [
    ({"model": {"factory": "nowhere.py:build"}}, "model.factory: {tmp}/nowhere.py: no such file"),
    ({"model": {"factory": f"{CODE}/my_model.py:nope"}}, "model.factory: {code}/my_model.py has no 'nope'"),
    ({"model": {"factory": f"{CODE}/my_model.py:NOT_CALLABLE"}}, "is a int, not callable"),
    ({"model": {"factory": f"{CODE}/broken.py:build"}}, "raised on import: ImportError: this module is broken on purpose"),
    ({"model": {"factory": f"{CODE}/my_model.py:build_dict"}}, "the model factory returned dict, not a torch.nn.Module"),
    ({"model": {"factory": f"{CODE}/my_model.py:build_wrong_shape"}}, "expected logits (2, 10)"),
    ({"task": {"factory": f"{CODE}/my_task.py:not_a_task"}}, "returned dict, not a search.Task"),
    ({"model": {"factory": "no.such.module:build"}}, "model.factory: cannot import no.such.module"),
    ({"train": {"loop": f"{CODE}/my_train.py:missing"}}, "train.loop: {code}/my_train.py has no 'missing'"),
    ({"space": {**user_spec()["space"], "custom": {"dimensions": [f"{CODE}/my_dims.py:Nameless"]}}}, "name must be an identifier"),
    ({"space": {**user_spec()["space"], "custom": {"dimensions": [f"{CODE}/my_dims.py:GradClip"]}, "grad_clip": {"max_norm": [1, 0.1]}}},
     "space.grad_clip.max_norm: `low <= high` must hold"),
    ({"space": {**user_spec()["space"], "custom": {"dimensions": [f"{CODE}/my_dims.py:GradClip"]}, "grad_clop": {}}},
     "space.grad_clop: unknown field"),
]


@pytest.mark.parametrize("override, expected", BAD_CODE, ids=[
    "missing-file", "missing-name", "not-callable", "raises-on-import", "wrong-type", "wrong-shape", "task-wrong-type",
    "missing-module", "missing-loop", "nameless-dimension", "bad-dimension-section", "unowned-section",
])
def test_bad_user_code_is_one_line_naming_key_and_file(no_ray, tmp_path, override, expected):
    path = write_toml(tmp_path / "s.toml", user_spec(**override))
    from search.core.spec import load

    with pytest.raises(UsageError) as info:
        launcher.launch(load(path), storage_url=f"sqlite:///{tmp_path / 'x.db'}")
    message = str(info.value)
    assert expected.format(tmp=tmp_path, code=CODE) in message and "\n" not in message
    assert not (tmp_path / "x.db").exists()


def test_cli_bad_model_factory_exits_2_with_one_line(tmp_path):
    path = write_toml(tmp_path / "s.toml", user_spec(model={"factory": "my_model.py:build"}))  # not beside the spec
    result = run_cli("launch", str(path), "--storage", f"sqlite:///{tmp_path / 'o.db'}", cwd=tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr + result.stdout
    assert f"model.factory: {tmp_path}/my_model.py: no such file" in lines[0]
    assert not (tmp_path / "o.db").exists()


# --- preflight -------------------------------------------------------------------------------


BRANCHY = {"model": {"factory": f"{CODE}/branchy_model.py:build"}, "space": {
    "model": {"hidden": [8, 16]},
    "pruning": {"kinds": ["none", "unstructured"]},
    "quantization": {"modes": ["none", "dynamic", "static"]},
}}


def test_preflight_refuses_static_int8_for_data_dependent_control_flow(no_ray, tmp_path):
    spec = from_dict(user_spec(**BRANCHY))
    with pytest.raises(UsageError) as info:
        launcher.launch(spec, storage_url=f"sqlite:///{tmp_path / 'x.db'}")
    message = str(info.value)
    assert message.startswith("preflight: space.quantization.modes 'static' cannot work on this model:")
    assert "--drop-unsupported" in message and "\n" not in message
    assert not (tmp_path / "x.db").exists()


def test_cli_preflight_refusal_exits_2_writes_nothing_and_starts_no_ray(tmp_path):
    path = write_toml(tmp_path / "s.toml", user_spec(**BRANCHY))
    result = run_cli("launch", str(path), "--storage", f"sqlite:///{tmp_path / 'o.db'}", cwd=tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "'static' cannot work" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout and not (tmp_path / "o.db").exists()
    assert "Started a local Ray instance" not in result.stderr + result.stdout


def test_preflight_table_and_drop_unsupported(tmp_path):
    from search.trial import preflight

    spec = from_dict(user_spec(model=BRANCHY["model"], space={**BRANCHY["space"], "runtime": {"enabled": True}}))
    plugins = resolve(spec)
    task = load_task(spec, plugins.task)
    report = preflight.run(spec, task, plugins, drop_unsupported=True)
    verdicts = {(c.dimension, c.choice): c.ok for c in report.checks}
    assert verdicts == {
        ("pruning", "unstructured"): True,
        ("quantization", "dynamic"): True,
        ("quantization", "static"): False,
        ("runtime", "torchscript"): False,
        ("runtime", "onnxruntime"): False,
    }
    assert "data-dependent control flow" in next(c.detail for c in report.checks if c.choice == "torchscript")
    assert report.spec.space.quantization.modes == ["none", "dynamic"]
    # No shipped runtime can take this model: the search measures eager, and the report says so.
    assert report.spec.space.runtime.runtimes == ["eager"]
    assert report.fallbacks == [("space.runtime.runtimes", "eager")]
    assert {c.choice for c in report.dropped} == {"static", "torchscript", "onnxruntime"}


@pytest.mark.ray
@pytest.mark.slow
def test_drop_unsupported_launch_runs_without_the_refused_choices(ray_local, tmp_path):
    spec = from_dict(user_spec(**BRANCHY, name="branchy", budget={"trials": 3, "concurrency": 2, "epochs": 1}))
    url = f"sqlite:///{tmp_path / 'b.db'}"
    summary = launcher.launch(spec, storage_url=url, drop_unsupported=True)
    study = optuna.load_study(study_name="branchy", storage=url)
    assert summary.complete == 3 and len(study.get_trials()) == 3
    assert all(t.params.get("quant_mode", "none") in ("none", "dynamic") for t in study.trials)  # the baseline: none
    assert all(t.user_attrs["runtime"] == "eager" for t in study.trials)  # the stated fallback: nothing else can run it
    assert study.user_attrs["spec"]["space"]["quantization"]["modes"] == ["none", "dynamic"]
    assert study.user_attrs["task_kind"] == "image"


def test_every_builtin_dimension_follows_the_protocol():
    """Disabled optional dimensions add nothing; every config round-trips through Optuna's
    FixedTrial (what export and retrain do); every param is owned by one dimension."""
    import spaces

    full = from_dict(tiny_spec_dict(space={"distillation": {"enabled": True}, "augmentation": {"enabled": True},
                                           "runtime": {"enabled": True},
                                           "architecture": {"families": ["mlp", "cnn", "mobilenet", "transformer"]},
                                           "pruning": {"kinds": ["none", "unstructured", "structured", "gradual"]}}))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5))
    owners = {}
    for _ in range(40):
        trial = study.ask()
        ctx = spaces.SuggestContext("image")
        config = spaces.suggest(trial, full, spaces.builtins(), ctx)
        assert suggest_params(optuna.trial.FixedTrial(trial.params), full, "image") == config
        for dimension in spaces.active(spaces.builtins(), spaces.SuggestContext("image")):
            ctx.params = dict(config)
            for key in dimension.suggest(optuna.trial.FixedTrial(trial.params), spaces.section(full, dimension), ctx):
                owners.setdefault(key, set()).add(dimension.name)
        study.tell(trial, 0.0)
    assert all(len(names) == 1 for names in owners.values())
    plain = from_dict(tiny_spec_dict(space={"runtime": {"enabled": False}}))
    for name in ("distillation", "augmentation", "runtime"):
        dimension = next(d for d in spaces.builtins() if d.name == name)
        assert dimension.suggest(optuna.create_study().ask(), spaces.section(plain, dimension), spaces.SuggestContext("image")) == {}


def test_task_metric_constraint_is_allowed_only_with_a_task_factory():
    spec = from_dict(user_spec(constraints=["macro_f1 >= 0.5", "latency_ms <= 2"]))
    f1, latency = spec.constraints
    assert f1.violation({"macro_f1": 0.4}) == pytest.approx(0.1) and latency.violation({"latency_ms": 1.0}) == -1.0
    with pytest.raises(UsageError, match="unknown metric 'macro_f1' in constraint"):
        from_dict(tiny_spec_dict(constraints=["macro_f1 >= 0.5"]))

"""The runtime dimension: each runtime's handler predicts like eager, ONNX Runtime
quantizes with its own kernels, measurements run on the deployed form."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import optuna
import pytest
import torch
from torch import nn

import spaces
from objectives import complexity, latency
from search.core.spec import from_dict
from search.tasks.plugins import suggest_params
from search.tasks.task import calibration_batches
from search.trial.measurement import measure
from search.trial.pipeline import run_pipeline
from spaces import quantization, runtime
from tests.conftest import predict, sample_many, tiny_spec_dict
from tests.dims import MLP8, RECIPE_ADAMW, TRANSFORMER, digits, trained_adamw, trained_cnn  # noqa: F401 - fixtures

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_fixed_trial_rebuilds_a_qat_runtime_config():
    """A retrain rebuilds params through suggest on a FixedTrial: the per-mode runtime name must round-trip."""
    spec = from_dict(tiny_spec_dict(space={"quantization": {"modes": ["qat"]}, "runtime": {"enabled": True}}))
    config = sample_many(spec, 1, seed=3)[0]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    suggest_params(trial, spec, "image")
    rebuilt = suggest_params(optuna.trial.FixedTrial(trial.params), spec, "image")
    assert rebuilt["runtime"] == trial.params["runtime_qat"] and config["runtime"] in ("eager", "torchscript")


@pytest.mark.parametrize("name", ["torchscript", "onnxruntime"])
def test_fp32_runtimes_predict_like_eager(digits, trained_cnn, name):
    example = torch.from_numpy(digits.train.X[:2])
    runner = runtime.apply({"runtime": name, "quant_mode": "none"}, trained_cnn, trained_cnn, example)
    assert isinstance(runner, nn.Module) and runner is not trained_cnn
    eager = predict(trained_cnn, digits.val.X)
    agreement = float(np.mean(predict(runner, digits.val.X) == eager))
    assert agreement >= 0.98
    timing = latency.measure(runner, digits.input_shape, repeats=10, warmup=2)
    assert timing.value > 0


def test_runtimes_on_mlp_and_transformer(digits):
    example = torch.from_numpy(digits.train.X[:2])
    for arch in (MLP8, TRANSFORMER):
        model = trained_adamw(digits, arch)
        eager = predict(model, digits.val.X)
        for name in ("torchscript", "onnxruntime"):
            runner = runtime.apply({"runtime": name}, model, model, example)
            assert np.mean(predict(runner, digits.val.X) == eager) >= 0.98, (arch["family"], name)


def test_onnxruntime_quantizes_with_its_own_int8_kernels(digits, trained_cnn):
    import onnx

    example = torch.from_numpy(digits.train.X[:2])
    calibration = calibration_batches(digits, 4)
    float_runner = runtime.apply({"runtime": "onnxruntime"}, trained_cnn, trained_cnn, example)
    static = runtime.apply({"runtime": "onnxruntime", "quant_mode": "static"}, trained_cnn, trained_cnn, example,
                           calibration=calibration)
    ops = {n.op_type for n in onnx.load_from_string(static.model_bytes).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert static.size_kb() < 0.5 * float_runner.size_kb()
    eager = predict(trained_cnn, digits.val.X)
    assert np.mean(predict(static, digits.val.X) == eager) >= 0.9

    mlp = trained_adamw(digits, MLP8)
    dynamic = runtime.apply({"runtime": "onnxruntime", "quant_mode": "dynamic"}, mlp, mlp, example)
    ops = [n.op_type for n in onnx.load_from_string(dynamic.model_bytes).graph.node]
    assert ops.count("MatMulInteger") == 3 and "Gemm" not in ops  # every linear layer, as torch's dynamic mode
    assert np.mean(predict(dynamic, digits.val.X) == predict(mlp, digits.val.X)) >= 0.95


def test_gemm_rewrite_keeps_outputs(digits):
    import onnxruntime as ort

    model = trained_adamw(digits, MLP8, 1)
    example = torch.from_numpy(digits.train.X[:2])
    original = runtime.export_onnx(model, example)
    rewritten = runtime.gemm_to_matmul(original)
    x = digits.val.X[:50]
    outputs = [ort.InferenceSession(b, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0] for b in (original, rewritten)]
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-4, atol=1e-5)


def test_torchscript_runs_torch_int8_models(digits, trained_cnn):
    example = torch.from_numpy(digits.train.X[:2])
    q = quantization.apply(copy.deepcopy(trained_cnn), "static", example, calibration=calibration_batches(digits, 4))
    runner = runtime.apply({"runtime": "torchscript", "quant_mode": "static"}, q, trained_cnn, example)
    assert isinstance(runner, torch.jit.ScriptModule)
    assert np.mean(predict(runner, digits.val.X) == predict(q, digits.val.X)) >= 0.99


def test_ort_module_pickles_and_reopens(digits, trained_cnn):
    runner = runtime.apply({"runtime": "onnxruntime"}, trained_cnn, trained_cnn, torch.from_numpy(digits.train.X[:2]), threads=1)
    again = pickle.loads(pickle.dumps(runner))
    x = torch.from_numpy(digits.val.X[:20])
    assert torch.allclose(runner(x), again(x)) and again.session.get_session_options().intra_op_num_threads == 1


def test_unexportable_model_fails_with_a_clear_reason(digits):
    class Spectral(nn.Module):
        def __init__(self):
            super().__init__()
            self.classifier = nn.Linear(33, 10)

        def forward(self, x):
            return self.classifier(torch.fft.rfft(x.flatten(1)).abs())

    model = Spectral().eval()
    with pytest.raises(runtime.RuntimeUnavailable, match="runtime onnxruntime: cannot export the Spectral model to ONNX"):
        runtime.apply({"runtime": "onnxruntime"}, model, model, torch.from_numpy(digits.train.X[:2]))
    with pytest.raises(runtime.RuntimeUnavailable, match="QAT"):
        runtime.apply({"runtime": "onnxruntime", "quant_mode": "qat"}, model, model, torch.zeros(1))


def test_latency_and_accuracy_are_measured_on_the_runner(digits, trained_cnn):
    import time

    class Slow(nn.Module):
        def forward(self, x):
            time.sleep(0.003)
            return torch.zeros(len(x), 10)

    spec = from_dict(tiny_spec_dict())
    info = {"macs_by_precision": {"fp32": 1000}, "macs": 1000, "float_params": 10, "train_seconds": 0.0}
    metrics = measure(trained_cnn, digits, spec, info, runner=Slow())
    assert metrics.latency_ms >= 3.0
    assert metrics.accuracy == pytest.approx(float(np.mean(digits.val.y == 0)))  # Slow always says class 0
    assert metrics.params == 10 and metrics.size_kb == pytest.approx(complexity.size_kb(trained_cnn))


@pytest.mark.parametrize("name", ["torchscript", "onnxruntime"])
def test_pipeline_reports_the_runtime(digits, name):
    spec = from_dict(tiny_spec_dict(space={"runtime": {"enabled": True}}, measure={"repeats": 5, "warmup": 1}))
    params = {**MLP8, **RECIPE_ADAMW, "prune_kind": "none", "quant_mode": "dynamic", "runtime": name}
    result = run_pipeline(params, digits, spec, seed=0)
    assert result.metrics.runtime == name and result.metrics.latency_ms > 0 and result.metrics.quantized
    assert result.runner is not result.model and result.metrics.accuracy > 0.5
    if name == "onnxruntime":
        assert result.metrics.size_kb == pytest.approx(result.runner.size_kb())


# --- the runtime table and hooks --------------------------------------------------------------------


def test_every_runtime_has_one_handler_and_qat_runs_where_it_can():
    assert runtime.RUNTIMES == ("eager", "torchscript", "onnxruntime")
    assert runtime.MODE_RUNTIMES == {"qat": ("eager", "torchscript")}
    assert runtime.Runtime.aliases == {"runtime": ("runtime_qat",)}
    linear = nn.Linear(2, 2)
    with pytest.raises(runtime.RuntimeUnavailable, match="unknown runtime 'tvm'"):
        runtime.apply({"runtime": "tvm"}, linear, linear, torch.zeros(1, 2))


def test_the_runtime_records_its_name_and_the_int8_kernels_it_runs(digits, trained_cnn):
    dim = runtime.Runtime()
    example = torch.from_numpy(digits.train.X[:2])
    scripted = runtime.apply({"runtime": "torchscript"}, trained_cnn, trained_cnn, example)
    assert dim.record(trained_cnn, scripted, {"runtime": "torchscript"}, None) == {"runtime": "torchscript", "int8_kernels": 0}
    q = quantization.apply(copy.deepcopy(trained_cnn), "static", example, calibration=calibration_batches(digits, 2))
    int8 = runtime.apply({"runtime": "torchscript", "quant_mode": "static"}, q, trained_cnn, example)
    assert dim.record(q, int8, {"runtime": "torchscript"}, None)["int8_kernels"] > 0
    assert dim.record(trained_cnn, trained_cnn, {}, None)["runtime"] == "eager"


def test_ship_and_load_back_the_onnx_model_it_measured(digits, trained_cnn, tmp_path):
    dim = runtime.Runtime()
    example = torch.from_numpy(digits.train.X[:2])
    (tmp_path / "model.onnx").write_bytes(b"stale")
    assert dim.ship(trained_cnn, tmp_path) is None and not (tmp_path / "model.onnx").exists()
    runner = runtime.apply({"runtime": "onnxruntime"}, trained_cnn, trained_cnn, example)
    assert dim.ship(runner, tmp_path) == {"format": "onnx", "file": "model.onnx"}
    loaded, name = dim.load_shipped(tmp_path / "model.onnx", "onnx")
    assert name == "onnxruntime" and torch.allclose(loaded(example), runner(example))
    assert dim.load_shipped(tmp_path / "model.onnx", "state_dict") is None


def test_trace_options_follow_the_trials_torchscript_setting():
    dim = runtime.Runtime()
    on = runtime.RuntimeSpace(torchscript_optimize=True)
    assert dim.trace_options({"runtime": "torchscript"}, on) == {"optimize": True}
    assert dim.trace_options({"runtime": "onnxruntime"}, on) == {"optimize": False}
    assert dim.trace_options({"runtime": "torchscript"}, runtime.RuntimeSpace()) == {"optimize": False}


def test_the_untrained_measurement_keeps_the_facts_marked_untrained(digits):
    from search.trial import feasibility

    spec = from_dict(tiny_spec_dict(measure={"repeats": 5, "warmup": 1}))
    params = {**MLP8, **RECIPE_ADAMW, "prune_kind": "gradual", "prune_ratio": 0.5, "quant_mode": "qat", "runtime": "torchscript"}
    values = feasibility.measure_untrained(params, digits, spec, seed=0)
    assert values["runtime"] == "torchscript" and values["quantized"] is True
    assert "int8_kernels" not in values and values["latency_ms"] > 0 and values["params"] > 0


def test_the_runtime_says_what_a_model_ran_on_and_how_to_load_what_it_ships(tmp_path):
    # The model card reads both through the registry (search.results.retrain names no dimension).
    assert spaces.ran_on_fact() == "runtime"
    assert spaces.ran_on_fact([spaces.Dimension()]) is None  # a registry without it: none

    class Where(spaces.Dimension):
        name = "where"
        facts = {"device_kind": spaces.Fact(card=True), "engine": spaces.Fact(ran_on=True)}

    assert spaces.ran_on_fact([Where()]) == "engine"

    # What the dimension ships, it says how to load: the snippet, filled in, runs.
    ship = runtime.Runtime().ship(runtime.to_onnxruntime(nn.Sequential(nn.Linear(4, 2)).eval(), torch.randn(2, 4)), tmp_path)
    description, call, lines = spaces.usage(ship["format"])
    assert call == "onnxruntime.InferenceSession" and "ONNX Runtime" in description
    code = "\n".join(line.format(file=tmp_path / ship["file"], shape="4") for line in lines)
    scope = {"x": np.zeros((3, 4), dtype=np.float32)}
    exec(code, scope)  # noqa: S102 - the model card's own lines
    assert scope["logits"].shape == (3, 2)
    assert spaces.usage("no such format") is None
    assert runtime.Runtime().usage("torchscript") is None  # model.pt is paretune train's own format

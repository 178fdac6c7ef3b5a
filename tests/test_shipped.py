"""What ships is what is measured: the default search measures each trial on the
runtime `paretune train` ships it in, int8 artifacts run int8 kernels after freezing
and graph optimization, and the model card's latency comes from the shipped file on
that same runtime."""

from __future__ import annotations

import copy

import numpy as np
import optuna
import pytest
import torch

from search.core.spec import from_dict, load
from search.results.retrain import trace
from search.tasks.data import load_task
from search.tasks.task import calibration_batches
from search.trial import hardware
from spaces import architecture, quantization, runtime
from tests.conftest import ROOT, predict, tiny_spec_dict, train

optuna.logging.set_verbosity(optuna.logging.WARNING)

CNN = {"family": "cnn", "width": 16, "depth": 2, "kernel": 3, "batch_norm": True}
MLP = {"family": "mlp", "width": 16, "depth": 2, "batch_norm": True}
RECIPE = {"optimizer": "adamw", "lr": 1e-2, "schedule": "cosine", "batch_size": 64, "weight_decay": 1e-4,
          "label_smoothing": 0.0, "dropout": 0.0}


@pytest.fixture(scope="module")
def digits():
    return load_task(from_dict(tiny_spec_dict()))


def _trained(task, arch, epochs=3):
    torch.manual_seed(0)
    return train(architecture.build(arch, task.input_shape, task.n_classes), task, {**arch, **RECIPE}, epochs)


def _int8_kinds(runner) -> set[str]:
    return {kind for kind in runtime.executed_ops(runner) if runtime.is_int8_kernel(kind)}


def test_int8_artifacts_run_int8_kernels_after_freezing_and_graph_optimization(digits):
    cnn = _trained(digits, CNN)
    example = torch.from_numpy(digits.train.X[:2])
    calibration = calibration_batches(digits, 4)
    fp32_predictions = predict(cnn, digits.val.X)

    # FX static int8 under TorchScript trace + freeze: the frozen graph calls fbgemm/onednn int8 ops.
    fx_int8 = quantization.apply(copy.deepcopy(cnn), "static", example, calibration)
    scripted = runtime.apply({"runtime": "torchscript", "quant_mode": "static"}, fx_int8, cnn, example)
    kinds = _int8_kinds(scripted)
    assert {"quantized::linear"} <= kinds and any(k.startswith("quantized::conv2d") for k in kinds), kinds
    assert not any(k in runtime.executed_ops(scripted) for k in ("aten::conv2d", "aten::_convolution", "aten::linear"))
    assert runtime.int8_kernels(scripted) >= 5  # 5 convolutions and the classifier, some fused with ReLU/add
    assert runtime.int8_kernels(runtime.apply({"runtime": "torchscript"}, cnn, cnn, example)) == 0

    # The model.pt `paretune train` ships: frozen, saved and read back, still int8 kernels.
    shipped, note = trace(fx_int8, example, [(torch.from_numpy(digits.test.X), digits.test.y)])
    assert note is None and isinstance(shipped, torch.jit.ScriptModule)
    assert _int8_kinds(shipped) == kinds

    # ONNX Runtime static int8 (QDQ): the optimized graph fuses it into QLinearConv / QGemm.
    ort_int8 = runtime.apply({"runtime": "onnxruntime", "quant_mode": "static"}, fx_int8, cnn, example,
                             calibration=calibration)
    ops = runtime.executed_ops(ort_int8)
    assert ops["QLinearConv"] >= 5 and "Conv" not in ops, dict(ops)
    assert runtime.int8_kernels(runtime.apply({"runtime": "onnxruntime"}, cnn, cnn, example)) == 0
    for runner in (scripted, shipped, ort_int8):
        assert np.mean(predict(runner, digits.val.X) == fp32_predictions) >= 0.9

    # Dynamic int8 of an MLP on ONNX Runtime: integer matmuls for every linear layer.
    mlp = _trained(digits, MLP)
    dynamic = runtime.apply({"runtime": "onnxruntime", "quant_mode": "dynamic"}, mlp, mlp, example)
    assert runtime.int8_kernels(dynamic) == 3 and "MatMul" not in runtime.executed_ops(dynamic)


def test_cpu_flags_name_what_the_machine_has():
    flags = hardware.cpu_flags().split()
    assert flags == [f for f in hardware.SIMD_FLAGS if f in flags]  # in the documented order, no others
    with open("/proc/cpuinfo") as handle:
        listed = next(line for line in handle if line.startswith(("flags", "Features"))).split(":", 1)[1].split()
    assert set(flags) == set(hardware.SIMD_FLAGS) & set(listed)
    assert hardware.describe()["cpu_flags"] == hardware.cpu_flags()


@pytest.mark.ray
@pytest.mark.slow
def test_default_digits_search_measures_and_ships_the_same_runtime(ray_local, tmp_path):
    """The default study (studies/digits.toml, its space untouched; a smaller budget):
    every trial is measured on a shipped runtime, and the exported knee's card reports
    the latency of the shipped file on the runtime the search measured."""
    import search
    from search.core.spec import to_toml_dict

    default = load(ROOT / "studies" / "digits.toml")
    data = to_toml_dict(default)
    data.update(name="shipped", budget={**data["budget"], "trials": 4, "concurrency": 2, "epochs": 2},
                measure={**data["measure"], "repeats": 20})
    spec = from_dict(data)
    assert spec.space == default.space
    url = f"sqlite:///{tmp_path / 'shipped.db'}"
    study = search.launch(spec, storage=url)
    trials = study.get_trials()
    assert len(trials) == 4
    for t in trials:
        attrs = t.user_attrs
        # The baseline is the model as it runs today: fp32 on eager PyTorch; every searched trial ships a runtime.
        assert attrs["runtime"] in (("eager",) if attrs.get("baseline") else ("torchscript", "onnxruntime")), attrs["runtime"]
        assert (attrs["int8_kernels"] > 0) == ((spaces_value(t.params, "quant_mode") or "none") != "none"), (t.params, attrs)
        assert attrs["gmac_per_s"] == pytest.approx(attrs["macs"] / (attrs["latency_ms"] * 1e6))
        assert attrs["cpu_flags"] == hardware.cpu_flags()

    # The knee among the searched trials (the baseline, eager by definition, ships TorchScript: another runtime).
    from search.results import pareto

    config = search.export(study, tmp_path / "best.toml", storage=url, where=["runtime!=eager"])
    knee = pareto.pick(study, "knee", ["runtime!=eager"])
    card = search.train(config, tmp_path / "model").card
    latency = card["latency"]
    assert latency["search"]["runtime"] == knee.user_attrs["runtime"] == latency["retrained"]["runtime"]
    assert latency["artifact"]["runtime"] == knee.user_attrs["runtime"] == card["artifact"]["runtime"]
    assert latency["artifact"]["file"] == ("model.onnx" if knee.user_attrs["runtime"] == "onnxruntime" else "model.pt")
    assert latency["artifact"]["latency_ms"] > 0 and latency["search"]["latency_ms"] == pytest.approx(knee.values[1])


def spaces_value(params: dict, name: str):
    import spaces

    return spaces.param_value(params, name)

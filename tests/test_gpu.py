"""GPU paths: NVML energy (a fake NVML here; the real one where a GPU is lent), training
and measuring on CUDA (skipped, and reported as not run, without a GPU), and the
spec combinations that cannot work on a GPU refused before anything starts."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from objectives import energy
from search.core.errors import UsageError
from search.core.spec import from_dict
from search.tasks.data import load_task
from tests.conftest import tiny_spec_dict

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine: GPU paths not run")


def fake_nvml(monkeypatch, per_call_mj: float, fail: bool = False) -> dict:
    """A pynvml whose energy counter grows by `per_call_mj` each time the workload runs."""
    state = {"counter": 1_000_000, "inits": 0, "shutdowns": 0}
    module = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    def init():
        if fail:
            raise NVMLError("NVML Shared Library Not Found")
        state["inits"] += 1

    module.NVMLError = NVMLError
    module.nvmlInit = init
    module.nvmlShutdown = lambda: state.__setitem__("shutdowns", state["shutdowns"] + 1)
    module.nvmlDeviceGetHandleByIndex = lambda index: ("gpu", index)
    module.nvmlDeviceGetTotalEnergyConsumption = lambda handle: state["counter"]
    module.nvmlDeviceGetName = lambda handle: b"Fake GPU 80GB"
    monkeypatch.setitem(sys.modules, "pynvml", module)
    monkeypatch.setattr(energy, "MIN_NVML_SECONDS", 0.05)

    def run_once():
        state["counter"] += per_call_mj

    state["run_once"] = run_once
    return state


def test_nvml_counter_gives_energy_per_inference(monkeypatch):
    state = fake_nvml(monkeypatch, per_call_mj=7)
    result = energy.measure(state["run_once"], latency_ms=1.0, macs_by_precision={"fp32": 10}, weight_bytes=100,
                            static_power_w=5.0, device="cuda")
    assert result.source == "nvml" and result.value == pytest.approx(7.0)
    assert result.detail["runs"] >= 1 and result.detail["device"] == "Fake GPU 80GB"
    assert state["inits"] == state["shutdowns"] == 1


def test_no_nvml_falls_back_to_the_estimate_and_says_so(monkeypatch):
    state = fake_nvml(monkeypatch, per_call_mj=7, fail=True)
    result = energy.measure(state["run_once"], latency_ms=2.0, macs_by_precision={"fp32": 0}, weight_bytes=0,
                            static_power_w=5.0, device="cuda")
    assert result.source == "estimate" and result.value == pytest.approx(10.0)


def test_cpu_measurement_never_asks_nvml(monkeypatch, tmp_path):
    state = fake_nvml(monkeypatch, per_call_mj=7)
    result = energy.measure(state["run_once"], latency_ms=1.0, macs_by_precision={}, weight_bytes=0, static_power_w=5.0,
                            powercap_root=tmp_path, device="cpu")
    assert result.source == "estimate" and state["inits"] == 0


def test_int8_or_onnxruntime_with_cuda_measurement_is_refused_before_anything_starts():
    from search.trial import preflight

    spec = from_dict(tiny_spec_dict(measure={"device": "cuda"}, space={
        **tiny_spec_dict()["space"], "quantization": {"modes": ["none", "static"]}, "runtime": {"enabled": True}}))
    with pytest.raises(UsageError, match="'static' cannot work on this model: int8 kernels run on the CPU, but measure.device is cuda"):
        preflight.run(spec, load_task(spec)).check()
    report = preflight.run(spec, load_task(spec), drop_unsupported=True)
    assert report.spec.space.quantization.modes == ["none"] and "onnxruntime" not in report.spec.space.runtime.runtimes


@CUDA
def test_trial_trains_and_measures_on_cuda():
    from search.trial.pipeline import run_pipeline

    spec = from_dict(tiny_spec_dict(resources={"gpus_per_trial": 1}, measure={"device": "cuda", "repeats": 20}))
    task = load_task(spec)
    params = {"family": "cnn", "width": 16, "depth": 2, "batch_norm": True, "kernel": 3, "optimizer": "adam", "lr": 3e-3,
              "schedule": "cosine", "batch_size": 64, "weight_decay": 1e-4, "dropout": 0.0, "label_smoothing": 0.0,
              "prune_kind": "structured", "prune_ratio": 0.5, "quant_mode": "none"}
    result = run_pipeline(params, task, spec, seed=0)
    metrics = result.metrics
    assert metrics.train_device == "cuda" and metrics.measure_device == "cuda" and metrics.gpu_model
    assert metrics.energy_source in ("nvml", "estimate") and metrics.latency_ms > 0 and metrics.accuracy > 0.3
    assert next(result.model.parameters()).is_cuda


@CUDA
def test_real_nvml_counter_where_a_gpu_is_lent():
    pytest.importorskip("pynvml")
    x = torch.randn(2048, 2048, device="cuda")
    result = energy.measure(lambda: x @ x, latency_ms=1.0, macs_by_precision={}, weight_bytes=0, static_power_w=0.0, device="cuda")
    assert result.source == "nvml" and result.value > 0

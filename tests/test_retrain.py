"""Round trip: a trial of the tiny spec → study → `paretune export` → `paretune train`
→ a TorchScript model that a fresh Python process loads and runs on the test split."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import optuna
import pytest
import tomllib

from search.core.spec import to_toml_dict
from search.tasks.data import load_task
from search.tasks.plugins import suggest_params
from search.trial.pipeline import run_pipeline
from tests.conftest import acc, run_cli

optuna.logging.set_verbosity(optuna.logging.WARNING)

# An MLP, no pruning, static int8 quantization on TorchScript: every Optuna param of the tiny spec pinned.
PARAMS = {
    "family": "mlp", "width": 16, "depth": 1, "batch_norm": True,
    "optimizer": "adam", "lr": 0.01, "schedule": "constant", "batch_size": 32,
    "weight_decay": 1e-5, "dropout": 0.0, "label_smoothing": 0.0, "use_l1": False,
    "prune_kind": "none", "quant_mode": "static", "runtime": "torchscript",
}
SEED = 5
# Search-time accuracy is on the validation split, the retrained one on the test split
# (72 vs 360 images apart): the same model scores within this of itself on both.
ACCURACY_TOLERANCE = 0.05


def record_trial(tmp, spec, params: dict, seed: int) -> dict:
    """One real trial run in-process and recorded in a study, as the searcher records it."""
    task = load_task(spec)
    config = suggest_params(optuna.trial.FixedTrial(params), spec, task.kind)
    result = run_pipeline(config, task, spec, seed)
    metrics = result.metrics.to_result()

    url = f"sqlite:///{tmp / (spec.name + '.db')}"
    study = optuna.create_study(study_name=spec.name, storage=url, directions=spec.directions)
    study.set_user_attr("objectives", spec.objective_names)
    study.set_user_attr("spec", to_toml_dict(spec))
    study.enqueue_trial(params)
    trial = study.ask()
    assert suggest_params(trial, spec, task.kind) == config
    trial.set_user_attr("seed", seed)
    for key in ("accuracy", "latency_ms", "latency_p90_ms", "energy_mj", "energy_source", "latency_source",
                "size_kb", "params", "macs", "quantized", "hostname", "cpu_model", "runtime"):
        trial.set_user_attr(key, metrics[key])
    study.tell(trial, [metrics[name] for name in spec.objective_names])
    return {"tmp": tmp, "url": url, "spec": spec, "task": task, "metrics": metrics, "model": result.model, "runner": result.runner}


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    from search.core.spec import from_dict
    from tests.conftest import tiny_spec_dict

    return record_trial(tmp_path_factory.mktemp("retrain"), from_dict(tiny_spec_dict()), PARAMS, SEED)


@pytest.mark.slow
def test_export_train_and_load_in_a_fresh_process(searched):
    tmp, metrics, task = searched["tmp"], searched["metrics"], searched["task"]
    assert metrics["quantized"] is True and metrics["accuracy"] > 0.5

    config_path = tmp / "best.toml"
    exported = run_cli("export", "tiny", "--storage", searched["url"], "--out", str(config_path), timeout=180)
    assert exported.returncode == 0, exported.stderr
    assert tomllib.loads(config_path.read_text())["params"] == PARAMS

    out = tmp / "model"
    trained = run_cli("train", str(config_path), "--out", str(out), timeout=300)
    assert trained.returncode == 0, trained.stderr
    assert "TorchScript" in trained.stdout and "seed 5" in trained.stdout

    card = json.loads((out / "model_card.json").read_text())
    assert card["seed"] == SEED and card["source"]["trial"] == 0 and card["config"]["quant_mode"] == "static"
    rows = {row["name"]: row for row in card["objectives"]}
    assert set(rows) == {"accuracy", "latency_ms", "energy_mj"}
    assert rows["accuracy"]["search_val"] == pytest.approx(metrics["accuracy"])
    retrained = rows["accuracy"]["retrained_test"]
    assert abs(retrained - metrics["accuracy"]) <= ACCURACY_TOLERANCE
    # Same seed, same single-threaded pipeline: the retrained model is the searched one,
    # so its test accuracy matches the in-process model's within a few images.

    in_process = acc(searched["model"], task, "test")
    assert abs(retrained - in_process) <= 3 / len(task.test.y)
    assert rows["latency_ms"]["retrained_test"] > 0 and rows["energy_mj"]["retrained_test"] > 0
    assert card["artifact"]["format"] == "torchscript" and card["artifact"]["note"] is None  # frozen, as measured
    # The card's shipped latency is model.pt itself, on the runtime the search measured.
    shipped = card["latency"]
    assert shipped["search"]["runtime"] == shipped["retrained"]["runtime"] == shipped["artifact"]["runtime"] == "torchscript"
    assert shipped["artifact"]["latency_ms"] > 0 and "model.pt loaded from disk" in shipped["artifact"]["how"]
    assert shipped["search"]["latency_ms"] == pytest.approx(metrics["latency_ms"])
    markdown = (out / "model_card.md").read_text()
    assert "## Latency of what ships" in markdown and "| `model.pt` as shipped | torchscript |" in markdown
    assert "latency of model.pt as shipped (torchscript): " in trained.stdout
    assert "| accuracy | maximize |" in markdown and "search (val)" in markdown and "retrained (test)" in markdown
    for name in ("model.pt", "state_dict.pt", "float_state_dict.pt", "config.toml"):
        assert (out / name).is_file(), name

    # A fresh interpreter with torch only: load the TorchScript model, predict the test split.
    # model.pt takes raw inputs: digits' 0-16 pixel values, as the card says.
    assert card["task"]["scaling"]["divisor"] == 16.0 and card["artifact"]["raw_inputs"] is True
    np.savez(tmp / "test_split.npz", X=task.test.X * 16.0, y=task.test.y)
    script = (
        "import sys, numpy as np, torch\n"
        "model = torch.jit.load(sys.argv[1])\n"
        "data = np.load(sys.argv[2])\n"
        "with torch.inference_mode():\n"
        "    pred = model(torch.from_numpy(data['X'])).argmax(1).numpy()\n"
        "print((pred == data['y']).mean())\n"
    )
    fresh = subprocess.run(
        [sys.executable, "-c", script, str(out / "model.pt"), str(tmp / "test_split.npz")],
        capture_output=True, text=True, timeout=120, cwd=tmp,
    )
    assert fresh.returncode == 0, fresh.stderr
    loaded_accuracy = float(fresh.stdout.strip().splitlines()[-1])
    assert loaded_accuracy > 0.5  # 10 classes: chance is 0.1
    assert loaded_accuracy == pytest.approx(card["artifact"]["test_accuracy"])
    assert loaded_accuracy == pytest.approx(retrained, abs=1e-9)


@pytest.mark.slow
def test_failed_trace_falls_back_to_state_dict(searched, monkeypatch, tmp_path):
    import torch

    from search.core.storage import load_study
    from search.results import exporter, retrain

    study = load_study(searched["url"], "tiny")
    config_path = exporter.export(study, study.trials[0], searched["url"], tmp_path / "best.toml")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.pt").write_text("stale")

    def refuse(*args, **kwargs):
        raise RuntimeError("cannot trace this")

    from search.trial import pipeline as trial

    pipeline = trial.run_pipeline

    def then_refuse(*args, **kwargs):  # the trial itself runs on TorchScript; tracing fails only at export
        result = pipeline(*args, **kwargs)
        monkeypatch.setattr(torch.jit, "trace", refuse)
        return result

    monkeypatch.setattr(trial, "run_pipeline", then_refuse)
    report = retrain.retrain(config_path, tmp_path / "model")
    assert report.artifact_format == "state_dict"
    assert "torch.jit.trace failed (RuntimeError: cannot trace this)" in report.artifact_note
    assert not (tmp_path / "model" / "model.pt").exists()
    assert (tmp_path / "model" / "state_dict.pt").is_file()
    assert "No TorchScript model: torch.jit.trace failed" in (tmp_path / "model" / "model_card.md").read_text()


def test_onnxruntime_trial_exports_the_onnx_model_it_was_measured_on(tmp_path):
    from search.core.spec import from_dict
    from search.core.storage import load_study
    from search.results import exporter, retrain
    from tests.conftest import tiny_spec_dict

    spec = from_dict(tiny_spec_dict(name="ort", space={**tiny_spec_dict()["space"], "runtime": {"enabled": True}}))
    params = {**PARAMS, "quant_mode": "dynamic", "runtime": "onnxruntime"}
    searched = record_trial(tmp_path, spec, params, SEED)
    study = load_study(searched["url"], "ort")
    config_path = exporter.export(study, study.trials[0], searched["url"], tmp_path / "best.toml")
    report = retrain.retrain(config_path, tmp_path / "model")

    assert report.artifact_format == "onnx"
    card = report.card
    assert card["artifact"]["file"] == "model.onnx" and card["artifact"]["torchscript"]["format"] == "torchscript"
    assert card["artifact"]["runtime"] == card["latency"]["search"]["runtime"] == "onnxruntime"
    assert card["artifact"]["latency_ms"] > 0 and card["latency"]["artifact"]["latency_ms"] == card["artifact"]["latency_ms"]
    assert "onnxruntime.InferenceSession" in (tmp_path / "model" / "model_card.md").read_text()
    # The saved file is the runner itself: ONNX Runtime's int8 MatMul, same predictions.
    import onnx
    import onnxruntime as ort

    graph = onnx.load(str(tmp_path / "model" / "model.onnx")).graph
    assert any(node.op_type in ("MatMulInteger", "DynamicQuantizeLinear") for node in graph.node)
    session = ort.InferenceSession(str(tmp_path / "model" / "model.onnx"), providers=["CPUExecutionProvider"])
    task = searched["task"]
    logits = session.run(None, {session.get_inputs()[0].name: task.test.X.astype(np.float32)})[0]
    assert float(np.mean(logits.argmax(1) == task.test.y)) == pytest.approx(card["artifact"]["test_accuracy"])
    assert card["artifact"]["test_accuracy"] > 0.5


def test_train_without_params_is_a_usage_error(tmp_path):
    from tests.conftest import tiny_spec_dict, write_toml

    path = write_toml(tmp_path / "plain.toml", tiny_spec_dict())
    result = run_cli("train", str(path), "--out", str(tmp_path / "m"), timeout=120)
    assert result.returncode == 2
    assert "no params table" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()


def test_tabular_model_card_carries_standardization_and_labels(tmp_path):
    from search.core.spec import from_dict
    from search.core.storage import load_study
    from search.results import exporter, retrain
    from tests.conftest import tiny_spec_dict

    spec = from_dict(tiny_spec_dict(name="wine", task="wine"))
    searched = record_trial(tmp_path, spec, {**PARAMS, "quant_mode": "none"}, SEED)
    study = load_study(searched["url"], "wine")
    config_path = exporter.export(study, study.trials[0], searched["url"], tmp_path / "best.toml")
    card = retrain.retrain(config_path, tmp_path / "model").card
    task = searched["task"]
    assert card["task"]["feature_mean"] == pytest.approx(list(task.feature_mean))
    assert len(card["task"]["feature_std"]) == 13 and card["task"]["class_labels"] == [0, 1, 2]
    markdown = (tmp_path / "model" / "model_card.md").read_text()
    assert "feature_mean: " in markdown and "Class index → label: 0: 0, 1: 1, 2: 2" in markdown

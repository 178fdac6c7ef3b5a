"""The Python API end to end, as a user script runs it: callables defined in the script
itself (no files to reference), a real local Ray, then front, export and a retrain —
and `paretune train` on the exported config finds the script's code again."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import optuna
import pytest
import tomllib

from tests.conftest import ROOT, run_cli

SCRIPT = textwrap.dedent('''
    """A user's script: task, model, loop and a dimension of its own, then a search."""
    import json
    import sys
    from pathlib import Path

    import numpy as np
    import torch
    from sklearn.datasets import load_wine
    from torch import nn
    from torch.utils.data import TensorDataset

    import search
    from spaces import Dimension, FloatRange, Strict, suggest_range

    LOG = Path(__file__).with_name("loop.log")


    def make_task(seed):
        data = load_wine()
        X = (data.data - data.data.mean(0)) / data.data.std(0)
        order = np.random.default_rng(seed).permutation(len(X))
        X = torch.tensor(X[order], dtype=torch.float32)
        y = torch.tensor(data.target[order])
        a, b = 100, 139
        def balanced_accuracy(model, loader):
            from sklearn.metrics import balanced_accuracy_score
            pred, true = [], []
            with torch.no_grad():
                for inputs, labels in loader:
                    pred.append(model(inputs).argmax(1)); true.append(labels)
            return {"balanced_accuracy": float(balanced_accuracy_score(torch.cat(true), torch.cat(pred)))}
        return search.Task(TensorDataset(X[:a], y[:a]), TensorDataset(X[a:b], y[a:b]), TensorDataset(X[b:], y[b:]),
                           input_shape=(13,), n_classes=3, metrics=balanced_accuracy, name="wine")


    def build(params, input_shape, n_classes):
        hidden = params["hidden"]
        return nn.Sequential(nn.Linear(input_shape[0], hidden), nn.ReLU(), nn.Linear(hidden, n_classes))


    def fit(model, train_loader, val_loader, optimizer, scheduler, epochs, report, hooks):
        for epoch in range(epochs):
            for inputs, labels in train_loader:
                logits = model(hooks.transform(inputs))
                loss = hooks.loss(model, inputs, logits, labels)
                optimizer.zero_grad(); loss.backward(); hooks.after_backward(model); optimizer.step(); scheduler.step()
            hooks.end_epoch(epoch)
            report(epoch, hooks.accuracy(model, val_loader))
        with LOG.open("a") as log:
            log.write(f"{epochs}\\n")


    class NoiseSpace(Strict):
        std: FloatRange = FloatRange(low=0.0, high=0.1)


    class InputNoise(Dimension):
        name = "input_noise"
        config = NoiseSpace

        def suggest(self, trial, config, ctx):
            return {"input_noise": suggest_range(trial, "input_noise", config.std)}

        def prepare(self, model, params, ctx):
            std = params["input_noise"]
            ctx.training.transforms.append(lambda x: x + std * torch.randn_like(x))


    if __name__ == "__main__":
        storage, out = sys.argv[1], Path(sys.argv[2])
        spec = {
            "name": "api",
            "objectives": {"accuracy": "maximize", "balanced_accuracy": "maximize", "latency_ms": "minimize"},
            "budget": {"trials": 3, "concurrency": 2, "epochs": 3},
            "measure": {"repeats": 10, "warmup": 2},
            "space": {"model": {"hidden": [8, 32]}, "pruning": {"kinds": ["none", "structured"], "finetune_epochs": 1},
                      "quantization": {"modes": ["none", "dynamic"]}, "input_noise": {"std": [0.0, 0.05]}},
        }
        study = search.launch(spec, task=make_task, model=build, train=fit, dimensions=[InputNoise()], storage=storage)
        report = search.front(study)
        config = search.export(study, out / "api-best.toml")
        retrained = search.train(config, out / "model", task=make_task, model=build, train=fit, dimensions=[InputNoise()])
        print(json.dumps({
            "complete": sum(t.state.name == "COMPLETE" for t in study.trials),
            "front": len(report.front), "hypervolume": report.hypervolume, "config": str(config),
            "card_objectives": [r["name"] for r in retrained.card["objectives"]],
            "card_model": retrained.card["model"], "artifact": retrained.card["artifact"]["format"],
        }))
''')


@pytest.mark.ray
@pytest.mark.slow
def test_python_api_with_callables_end_to_end(tmp_path):
    script = tmp_path / "user_search.py"
    script.write_text(SCRIPT)
    url = f"sqlite:///{tmp_path / 'api.db'}"
    result = subprocess.run([sys.executable, str(script), url, str(tmp_path)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["complete"] == 3 and summary["front"] >= 1 and summary["hypervolume"] >= 0
    assert summary["card_objectives"] == ["accuracy", "balanced_accuracy", "latency_ms"]
    assert summary["card_model"]["source"] == "user" and set(summary["card_model"]["knobs"]) == {"hidden"}

    study = optuna.load_study(study_name="api", storage=url)
    assert [t.number for t in study.trials if t.user_attrs.get("baseline")] == [0]  # the baseline runs first
    for trial in study.trials:
        # The baseline is the user's model as it runs today: no pruning, no quantization.
        compressed = set() if trial.user_attrs.get("baseline") else {"prune_kind", "quant_mode"}
        assert {"hidden", "input_noise"} | compressed <= set(trial.params)
        assert not trial.user_attrs.get("baseline") or not {"prune_kind", "quant_mode"} & set(trial.params)
        assert 0.0 <= trial.user_attrs["balanced_accuracy"] <= 1.0
        assert trial.values[1] == trial.user_attrs["balanced_accuracy"]
    # The loop ran in the Ray workers: 3 trials + the retrain, and a fine-tune after each structured pruning.
    runs = (tmp_path / "loop.log").read_text().split()
    assert runs.count("3") == 4 and set(runs) <= {"1", "3"}
    spec = study.user_attrs["spec"]
    assert spec["model"]["factory"] == f"{script}:build" and spec["task"]["factory"] == f"{script}:make_task"
    assert spec["space"]["custom"]["dimensions"] == [f"{script}:InputNoise"]

    # The exported config references the script: the CLI retrains it without the callables.
    config = tmp_path / "api-best.toml"
    assert tomllib.loads(config.read_text())["model"]["factory"] == f"{script}:build"
    trained = run_cli("train", str(config), "--out", str(tmp_path / "cli_model"), cwd=tmp_path, timeout=300)
    assert trained.returncode == 0, trained.stderr[-2000:]
    card = json.loads((tmp_path / "cli_model" / "model_card.json").read_text())
    assert card["model"]["factory"] == f"{script}:build" and card["params"] == tomllib.loads(config.read_text())["params"]


@pytest.mark.ray
@pytest.mark.slow
def test_python_api_prints_the_summary_the_cli_prints(tmp_path, ray_local):
    """`search.launch(..., verbose=)` reports the search as `paretune launch` does: its
    start, a line per trial, and the same closing lines (the front, its knee, the
    hypervolume, the export command) that `paretune launch` prints for the study."""
    import io

    from rich.console import Console
    from typer.testing import CliRunner

    import search
    from search.cli import app, console
    from tests.conftest import tiny_spec_dict, write_toml

    spec = write_toml(tmp_path / "same.toml", tiny_spec_dict(name="same", budget={"trials": 2, "concurrency": 2}))
    url = f"sqlite:///{tmp_path / 'same.db'}"
    shown = io.StringIO()
    told = []
    study = search.launch(spec, storage=url, verbose=Console(file=shown, width=console.width), on_told=told.append)
    api = shown.getvalue()
    assert len(told) == 2 and sum(t.state.name == "COMPLETE" for t in study.trials) == 2
    assert "starting study same (accuracy max, latency_ms min, energy_mj min)" in api
    assert all(f"trial {t.number:>4} COMPLETE" in api for t in told)
    assert "this run stored 2 trials in " in api and ": 2 COMPLETE, 0 FAIL, 0 PRUNED" in api

    # The CLI on the same study (Ray is up: --address auto joins it): nothing left to run, the same closing lines.
    result = CliRunner().invoke(app, ["launch", str(spec), "--storage", url, "--address", "auto"])
    assert result.exit_code == 0, result.output[-3000:]
    assert "this run stored 0 trials in " in result.output

    def closing(text: str) -> list[str]:
        lines = text.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("this run stored "))
        return lines[start + 1:]

    assert closing(api) == closing(result.output)
    assert any(line.startswith(f"study same: 2/2 COMPLETE in {url}; ") for line in closing(api))
    assert any(line.startswith("export the knee (trial ") and line.endswith(f"paretune export same --storage {url} --out same-best.toml")
               for line in closing(api))

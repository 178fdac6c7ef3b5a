"""The README's "Use your own model" walk-through, as written, on a small copy of the
example: make the images, launch, front, export, train (CLI only)."""

from __future__ import annotations

import json
import shutil
import sys

import optuna
import pytest
import tomllib

from tests.conftest import ROOT, run_cli

EXAMPLE = ROOT / "examples" / "own_model"


@pytest.mark.ray
@pytest.mark.slow
def test_own_model_example_walkthrough(tmp_path):
    for name in ("spec.toml", "model.py", "make_images.py"):
        shutil.copy(EXAMPLE / name, tmp_path / name)
    made = __import__("subprocess").run(
        [sys.executable, "make_images.py", "--count", "400", "--out", "data/glyphs"], cwd=tmp_path, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    assert sum(1 for _ in (tmp_path / "data" / "glyphs").rglob("*.png")) == 400

    url = f"sqlite:///{tmp_path / 'paretune.db'}"
    launched = run_cli("launch", "spec.toml", "--trials", "3", "--storage", url, cwd=tmp_path, timeout=900)
    assert launched.returncode == 0, launched.stdout[-2000:] + launched.stderr[-2000:]
    assert "preflight on width=" in launched.stdout  # the user's model, described by its knobs
    for choice in ("structured", "static", "qat", "torchscript", "onnxruntime"):
        assert f" {choice} " in launched.stdout
    study = optuna.load_study(study_name="glyphs", storage=url)
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 3
    assert all({"width", "blocks", "act"} <= set(t.params) for t in study.trials)

    front = run_cli("front", "glyphs", "--storage", url, cwd=tmp_path)
    assert front.returncode == 0 and "width=" in front.stdout, front.stderr
    exported = run_cli("export", "glyphs", "--storage", url, "--out", "glyphs-best.toml", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    config = tomllib.loads((tmp_path / "glyphs-best.toml").read_text())
    assert config["model"]["factory"] == f"{tmp_path}/model.py:build" and config["task"]["images"] == str(tmp_path / "data" / "glyphs")
    trained = run_cli("train", "glyphs-best.toml", "--out", "glyphs_model", cwd=tmp_path, timeout=600)
    assert trained.returncode == 0, trained.stderr[-2000:]
    card = json.loads((tmp_path / "glyphs_model" / "model_card.json").read_text())
    assert card["model"] == {"source": "user", "factory": f"{tmp_path}/model.py:build",
                             "knobs": {k: config["params"][k] for k in ("width", "blocks", "act")}}
    assert card["task"]["input_shape"] == [3, 32, 32] and card["task"]["class_labels"] == [str(d) for d in range(10)]
    markdown = (tmp_path / "glyphs_model" / "model_card.md").read_text()
    assert "The user's model from" in markdown and "pixel / 255" in markdown

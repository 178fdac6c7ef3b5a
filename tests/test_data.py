"""Tasks: built-in datasets, user .npz/.csv files, fixed seeded splits, bad files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from search.core.errors import UsageError
from search.core.spec import from_dict
from search.tasks.data import load_task
from tests.conftest import tiny_spec_dict


def spec_for(task, seed=0):
    return from_dict(tiny_spec_dict(task=task, seed=seed))


def test_digits_split_is_fixed_by_seed_and_disjoint():
    first, again, other = load_task(spec_for("digits")), load_task(spec_for("digits")), load_task(spec_for("digits", 1))
    assert first.kind == "image" and first.input_shape == (1, 8, 8) and first.n_classes == 10
    assert len(first.train.X) + len(first.val.X) + len(first.test.X) == 1797
    np.testing.assert_array_equal(first.test.X, again.test.X)
    assert not np.array_equal(first.test.X, other.test.X)
    assert 0.0 <= first.train.X.min() and first.train.X.max() <= 1.0


def test_tabular_builtin_is_standardized_on_train():
    task = load_task(spec_for("wine"))
    assert task.kind == "tabular" and task.input_shape == (13,)
    assert np.allclose(task.train.X.mean(axis=0), 0, atol=1e-5)


def test_npz_and_csv_user_datasets(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(120, 5)), np.repeat([0, 1, 2], 40)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    task = load_task(spec_for({"path": str(tmp_path / "d.npz")}))
    assert task.kind == "tabular" and task.n_classes == 3 and task.input_shape == (5,)
    frame = pd.DataFrame(X, columns=list("abcde")).assign(label=np.array(["x", "y", "z"])[y])
    frame.to_csv(tmp_path / "d.csv", index=False)
    task = load_task(spec_for({"path": str(tmp_path / "d.csv"), "label": "label"}))
    assert task.n_classes == 3 and len(task.train.X) == 72


@pytest.mark.parametrize(
    "make,expected",
    [
        (lambda p: p.write_bytes(b"not a zip"), "not a readable .npz"),
        (lambda p: np.savez(p, X=np.zeros((20, 3))), "missing array 'y'"),
        (lambda p: np.savez(p, X=np.zeros((20, 3)), y=np.zeros(20)), "1 class"),
        (lambda p: np.savez(p, X=np.zeros((20, 3)), y=np.arange(19) % 2), "X has 20 rows but y has 19"),
        (lambda p: np.savez(p, X=np.full((20, 3), np.nan), y=np.arange(20) % 2), "finite"),
    ],
    ids=["garbled", "missing-y", "one-class", "length-mismatch", "nan-features"],
)
def test_bad_npz_names_the_file(tmp_path, make, expected):
    path = tmp_path / "bad.npz"
    make(path)
    with pytest.raises(UsageError) as info:
        load_task(spec_for({"path": str(path)}))
    assert expected in str(info.value) and str(path) in str(info.value)


def test_csv_without_label_column(tmp_path):
    pd.DataFrame({"a": range(20), "b": range(20)}).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(UsageError, match="no label column 'target'"):
        load_task(spec_for({"path": str(tmp_path / "d.csv"), "label": "target"}))


def test_tabular_task_keeps_its_standardization_and_labels(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(5, 2, 60), "b": rng.normal(-3, 0.5, 60), "y": ["cat", "dog", "eel"] * 20})
    frame.to_csv(tmp_path / "t.csv", index=False)
    task = load_task(from_dict({"name": "t", "task": {"path": str(tmp_path / "t.csv"), "label": "y"}}))
    assert task.class_labels == ("cat", "dog", "eel")
    # The stored statistics turn the raw training rows into the model's inputs.
    raw = frame.drop(columns=["y"]).to_numpy(np.float32)
    mean, std = np.array(task.feature_mean), np.array(task.feature_std)
    assert 4 < mean[0] < 6 and -3.5 < mean[1] < -2.5
    standardized = (raw - mean) / std
    assert any(np.allclose(standardized[i], task.train.X[0], atol=1e-5) for i in range(len(raw)))
    assert load_task(from_dict({"name": "d", "task": "digits"})).feature_mean is None


def test_npz_image_scaling_is_recorded_and_model_pt_takes_raw_inputs(tmp_path):
    """An npz of 0-255 images: the divisor is the file's maximum, stored exactly; the
    retrained model.pt applies it itself, so raw pixels predict as the card says."""
    import torch

    from search.results.retrain import trace
    from tests.conftest import acc, train

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 30)
    X = np.clip(rng.normal(60 + 70 * y[:, None, None], 10, (90, 6, 6)), 0, 255).astype(np.uint8)
    np.savez(tmp_path / "imgs.npz", X=X, y=y)
    task = load_task(spec_for({"path": str(tmp_path / "imgs.npz")}))
    peak = float(X.max())
    assert task.scaling.divisor == peak and f"divided by {peak:g}" in task.preprocessing["scaling"]
    assert float(task.train.X.max()) == pytest.approx(1.0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 3))
    recipe = {"optimizer": "adam", "lr": 0.05, "schedule": "constant", "batch_size": 16, "weight_decay": 0.0, "label_smoothing": 0.0}
    train(model, task, recipe, 20)
    assert acc(model, task, "test") > 0.5  # learned something (chance is 1/3)
    from search.tasks.task import loader

    traced, note = trace(model, torch.from_numpy(task.train.X[:2]), list(loader(task.test, 8)), task.scaling)
    assert note is None
    raw = torch.from_numpy(task.test.X * peak)  # what a user has: the file's own values
    predicted = traced(raw).argmax(1).numpy()
    assert np.mean(predicted == task.test.y) == pytest.approx(acc(model, task, "test"))


def test_channels_last_images_are_transposed_and_said(tmp_path):
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 20)
    X = rng.random((40, 8, 8, 1)).astype(np.float32) * 0.2 + y[:, None, None, None] * 0.5  # N×H×W×1
    np.savez(tmp_path / "last.npz", X=X, y=y)
    task = load_task(spec_for({"path": str(tmp_path / "last.npz")}))
    assert task.input_shape == (1, 8, 8) and task.kind == "image"
    assert "N×H×W×C" in task.preprocessing["layout"] and "transposed" in task.preprocessing["layout"]
    np.savez(tmp_path / "odd.npz", X=rng.random((40, 8, 8, 7)), y=y)
    with pytest.raises(UsageError, match=r"N×C×H×W or N×H×W×C with C = 1, 3 or 4"):
        load_task(spec_for({"path": str(tmp_path / "odd.npz")}))

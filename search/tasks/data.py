"""Loading a task: where its data comes from, split train/val/test (search.tasks.task holds
the `Task` type).

- Built-in (digits, wine, breast_cancer) and array files (a .npz with X and y, a .csv
  with a label column) are read into memory and split 60/20/20 per class by the
  spec's seed. Images (digits, or a .npz whose X is N×H×W or N×C×H×W) become float32
  N×C×H×W in [0, 1]; tabular data is standardized with statistics of the training
  split only.
- An image folder (`[task] images = "DIR"`, search.tasks.images) is decoded lazily, batch by
  batch, in DataLoader workers: it never sits in memory as a whole.
- A user factory (`[task] factory = "my_task.py:make"`, or `search.launch(task=...)`)
  returns a `Task` of its own Datasets.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from search.core.errors import UsageError
from search.core.spec import StudySpec, TaskSource
from search.tasks import tabular_bench
from search.tasks.images import load_image_folder
from search.tasks.plugins import task_from_factory
from search.tasks.task import (
    TEST_FRACTION,
    VAL_FRACTION,
    ArrayDataset,
    Scaling,
    Task,
    TaskData,
)


def _builtin(name: str) -> tuple[np.ndarray, np.ndarray, str, dict]:
    from sklearn import datasets

    if name == "digits":
        bunch = datasets.load_digits()
        notes = {"scaling": Scaling(0.0, 16.0, "pixel values 0-16 divided by 16")}
        return bunch.images[:, None, :, :] / 16.0, bunch.target, "image", notes
    loader = {"wine": datasets.load_wine, "breast_cancer": datasets.load_breast_cancer}[name]
    bunch = loader()
    return bunch.data, bunch.target, "tabular", {}


CHANNELS = (1, 3, 4)


def _image_layout(X: np.ndarray, path: Path) -> tuple[np.ndarray, dict]:
    """N×C×H×W as the models take it; an N×H×W×C array (C = 1, 3 or 4 last, not first)
    is transposed, and the note says so."""
    if X.shape[1] in CHANNELS:
        return X, {}
    if X.shape[-1] in CHANNELS:
        return np.ascontiguousarray(X.transpose(0, 3, 1, 2)), {
            "layout": f"N×H×W×C in {path.name} ({'×'.join(map(str, X.shape[1:]))}), transposed to N×C×H×W"
        }
    raise UsageError(
        f"{path}: X has shape {X.shape}: an image array is N×C×H×W or N×H×W×C with C = 1, 3 or 4 channels; "
        "transpose it, or flatten it to N×F for a tabular task"
    )


def _from_npz(path: Path) -> tuple[np.ndarray, np.ndarray, str, dict]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in ("X", "y") if k not in archive.files]
            if missing:
                raise UsageError(f"{path}: missing array {missing[0]!r} (a .npz task needs X and y)")
            X, y = archive["X"], archive["y"]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UsageError(f"{path}: not a readable .npz file ({exc.__class__.__name__})") from None
    notes: dict = {}
    if X.ndim == 3:  # N×H×W grey images
        X = X[:, None]
    if X.ndim not in (2, 4):
        raise UsageError(f"{path}: X must be 2-D (tabular) or 3-/4-D (images), but has shape {X.shape}")
    kind = "image" if X.ndim == 4 else "tabular"
    if kind == "image":
        X, notes = _image_layout(X, path)
        peak = float(X.max(initial=0)) if np.issubdtype(X.dtype, np.number) else 1.0
        if peak > 1.0:
            # Images to [0, 1]: divided by the largest value in the file, recorded exactly.
            notes["scaling"] = Scaling(0.0, peak, f"divided by {peak:g}, the largest value of X in {path.name}")
            X = X / peak
    return X, y, kind, notes


def _from_csv(path: Path, label: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    import pandas as pd

    if not label:
        raise UsageError(f"{path}: task.label must name the label column of a CSV task")
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not a readable CSV file ({exc.__class__.__name__})") from None
    if label not in frame.columns:
        raise UsageError(f"{path}: no label column {label!r} (columns: {', '.join(map(str, frame.columns[:8]))})")
    features = frame.drop(columns=[label])
    non_numeric = [c for c in features.columns if not np.issubdtype(features[c].dtype, np.number)]
    if non_numeric:
        raise UsageError(f"{path}: column {non_numeric[0]!r} is not numeric")
    return features.to_numpy(), frame[label].to_numpy(), "tabular"


def _read(task: str | TaskSource) -> tuple[np.ndarray, np.ndarray, str, str, dict]:
    if isinstance(task, str):
        X, y, kind, notes = _builtin(task)
        return X, y, kind, task, notes
    path = task.path
    if not path.is_file():
        raise UsageError(f"{path}: no such dataset file (task.path)")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        X, y, kind, notes = _from_npz(path)
    elif suffix == ".csv":
        X, y, kind = _from_csv(path, task.label)
        notes = {}
    else:
        raise UsageError(f"{path}: unsupported dataset format {suffix!r}; use .npz (X, y) or .csv (task.label)")
    return X, y, kind, path.stem, notes


def _check(X: np.ndarray, y: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray]:
    """The labels as class indices, and the label of each index."""
    if len(X) != len(y):
        raise UsageError(f"{source}: X has {len(X)} rows but y has {len(y)}")
    if y.ndim != 1:
        raise UsageError(f"{source}: y must be 1-D, but has shape {y.shape}")
    if not np.issubdtype(X.dtype, np.number) or not np.isfinite(X.astype(np.float64)).all():
        raise UsageError(f"{source}: X must be numeric and finite")
    classes, y_index, counts = np.unique(y, return_inverse=True, return_counts=True)
    if len(classes) < 2:
        raise UsageError(f"{source}: y has {len(classes)} class; a classification task needs at least 2")
    if counts.min() < 5:
        raise UsageError(f"{source}: class {classes[counts.argmin()]!r} has {counts.min()} samples; need >= 5 per class")
    return y_index, classes


def _table_task(spec: StudySpec) -> TaskData:
    """A tabular benchmark: no samples, the table answers every trial (search.tasks.tabular_bench)."""
    tabular_bench.check_spec(spec)
    tabular_bench.table()  # a missing or unreadable table fails here, before Ray starts
    empty = ArrayDataset(np.empty((0, 3, 32, 32), dtype=np.float32), np.empty(0, dtype=np.int64))
    return Task(empty, empty, empty, (3, 32, 32), 10, name=tabular_bench.TASK, kind="table")


def load_task(spec: StudySpec, factory: Callable | None = None) -> Task:
    """Read and split the spec's task; raises UsageError naming the file or key when it
    is unusable. `factory`: the user's task function (search.tasks.plugins resolves the
    spec's `[task] factory`; search.launch(task=...) passes it directly)."""
    if spec.task == "nasbench201":
        return _table_task(spec)
    if isinstance(spec.task, TaskSource) and spec.task.images is not None:
        return load_image_folder(spec.task, spec.seed)
    if factory is not None or (isinstance(spec.task, TaskSource) and spec.task.factory is not None):
        return task_from_factory(spec, factory)
    return _array_task(spec)


def _array_task(spec: StudySpec) -> Task:
    # Imported here, not at the top: every trial's worker unpickles TaskData, hence
    # imports this module, and scikit-learn alone takes seconds to import there.
    from sklearn.model_selection import train_test_split

    X, y, kind, name, notes = _read(spec.task)
    source = str(spec.task.path) if isinstance(spec.task, TaskSource) else name
    y, classes = _check(X, y, source)
    X = X.astype(np.float32)
    X_trval, X_test, y_trval, y_test = train_test_split(
        X, y, test_size=TEST_FRACTION, stratify=y, random_state=spec.seed
    )
    X_train, X_val, y_train, y_val = train_test_split(
        X_trval, y_trval, test_size=VAL_FRACTION / (1 - TEST_FRACTION), stratify=y_trval, random_state=spec.seed
    )
    mean = std = None
    scaling = notes.pop("scaling", None)
    if kind == "tabular":
        mean, std = X_train.mean(axis=0), X_train.std(axis=0) + 1e-8
        X_train, X_val, X_test = ((a - mean) / std for a in (X_train, X_val, X_test))
        mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        scaling = Scaling(mean, std, "each feature standardized with the training split's mean and std")
    preprocessing = {**notes, "scaling": scaling.description if scaling else "none: X is used as it is"}
    return Task(
        train=ArrayDataset(X_train, y_train),
        val=ArrayDataset(X_val, y_val),
        test=ArrayDataset(X_test, y_test),
        input_shape=tuple(X.shape[1:]),
        n_classes=int(y.max()) + 1,
        name=name,
        kind=kind,
        feature_mean=mean,
        feature_std=std,
        class_labels=tuple(c.item() if hasattr(c, "item") else c for c in classes),
        scaling=scaling,
        preprocessing=preprocessing,
    )

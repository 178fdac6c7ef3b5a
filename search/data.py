"""Tasks: the built-in datasets and user files, split train/val/test by the spec's seed.

Images (digits, or a .npz whose X is N×H×W or N×C×H×W) become float32 N×C×H×W in
[0, 1]; tabular data (wine, breast_cancer, a CSV, a .npz with 2-D X) is standardized
with statistics of the training split only.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from search.errors import UsageError
from search.spec import StudySpec, TaskFile

VAL_FRACTION = 0.2
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class TaskData:
    name: str
    kind: str  # "image", "tabular", or "table" (a tabular benchmark: nothing trains)
    input_shape: tuple[int, ...]  # one sample, e.g. (1, 8, 8) or (13,)
    n_classes: int
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    # What a deployed model needs to reproduce the inputs and read its outputs:
    # tabular standardization (training-split statistics) and the label of each class index.
    feature_mean: tuple[float, ...] | None = None
    feature_std: tuple[float, ...] | None = None
    class_labels: tuple = ()


def _builtin(name: str) -> tuple[np.ndarray, np.ndarray, str]:
    from sklearn import datasets

    if name == "digits":
        bunch = datasets.load_digits()
        return bunch.images[:, None, :, :] / 16.0, bunch.target, "image"
    loader = {"wine": datasets.load_wine, "breast_cancer": datasets.load_breast_cancer}[name]
    bunch = loader()
    return bunch.data, bunch.target, "tabular"


def _from_npz(path: Path) -> tuple[np.ndarray, np.ndarray, str]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in ("X", "y") if k not in archive.files]
            if missing:
                raise UsageError(f"{path}: missing array {missing[0]!r} (a .npz task needs X and y)")
            X, y = archive["X"], archive["y"]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UsageError(f"{path}: not a readable .npz file ({exc.__class__.__name__})") from None
    if X.ndim == 3:  # N×H×W grey images
        X = X[:, None]
    if X.ndim not in (2, 4):
        raise UsageError(f"{path}: X must be 2-D (tabular) or 3-/4-D (images), but has shape {X.shape}")
    kind = "image" if X.ndim == 4 else "tabular"
    if kind == "image" and X.max(initial=0) > 1.0:
        X = X / float(X.max())
    return X, y, kind


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


def _read(task: str | TaskFile) -> tuple[np.ndarray, np.ndarray, str, str]:
    if isinstance(task, str):
        X, y, kind = _builtin(task)
        return X, y, kind, task
    path = task.path
    if not path.is_file():
        raise UsageError(f"{path}: no such dataset file (task.path)")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        X, y, kind = _from_npz(path)
    elif suffix == ".csv":
        X, y, kind = _from_csv(path, task.label)
    else:
        raise UsageError(f"{path}: unsupported dataset format {suffix!r}; use .npz (X, y) or .csv (task.label)")
    return X, y, kind, path.stem


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
    """A tabular benchmark: no samples, the table answers every trial (search.tabular_bench)."""
    from search import tabular_bench

    tabular_bench.check_spec(spec)
    tabular_bench.table()  # a missing or unreadable table fails here, before Ray starts
    empty = np.empty((0, 3, 32, 32), dtype=np.float32)
    labels = np.empty(0, dtype=np.int64)
    return TaskData(tabular_bench.TASK, "table", (3, 32, 32), 10, empty, labels, empty, labels, empty, labels)


def load_task(spec: StudySpec) -> TaskData:
    """Read and split the spec's task; raises UsageError naming the file when it is unusable."""
    if spec.task == "nasbench201":
        return _table_task(spec)
    # Imported here, not at the top: every trial's worker unpickles TaskData, hence
    # imports this module, and scikit-learn alone takes seconds to import there.
    from sklearn.model_selection import train_test_split

    X, y, kind, name = _read(spec.task)
    source = str(spec.task.path) if isinstance(spec.task, TaskFile) else name
    y, classes = _check(X, y, source)
    X = X.astype(np.float32)
    X_trval, X_test, y_trval, y_test = train_test_split(
        X, y, test_size=TEST_FRACTION, stratify=y, random_state=spec.seed
    )
    X_train, X_val, y_train, y_val = train_test_split(
        X_trval, y_trval, test_size=VAL_FRACTION / (1 - TEST_FRACTION), stratify=y_trval, random_state=spec.seed
    )
    mean = std = None
    if kind == "tabular":
        mean, std = X_train.mean(axis=0), X_train.std(axis=0) + 1e-8
        X_train, X_val, X_test = ((a - mean) / std for a in (X_train, X_val, X_test))
        mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    cast = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return TaskData(
        name=name,
        kind=kind,
        input_shape=tuple(X.shape[1:]),
        n_classes=int(y.max()) + 1,
        X_train=cast(X_train),
        y_train=y_train.astype(np.int64),
        X_val=cast(X_val),
        y_val=y_val.astype(np.int64),
        X_test=cast(X_test),
        y_test=y_test.astype(np.int64),
        feature_mean=mean,
        feature_std=std,
        class_labels=tuple(c.item() if hasattr(c, "item") else c for c in classes),
    )

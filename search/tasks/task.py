"""The task type every stage shares: a `Task` (three torch Datasets and what they
hold), how raw inputs scale to model inputs, and batching (`loader`).

In-memory datasets hand out whole batches by fancy indexing (no per-sample Python
work); a DataLoader shuffles by its own seeded generator, so the batch order is a
function of the seed alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from search.core.spec import StudySpec

VAL_FRACTION = 0.2
TEST_FRACTION = 0.2


@dataclass
class Task:
    """A classification task: three torch Datasets of `(input, label)` pairs.

    - `train`, `val`, `test`: each item is a float tensor of `input_shape` and an integer
      class index in [0, n_classes). Trials train on `train`, report on `val`; `paretune
      train` measures the retrained model on `test`.
    - `metrics(model, loader) -> dict[str, float]` (optional): the task's own measures of
      a model on a DataLoader of `val` (or `test`); any of its keys can be an objective or
      a constraint in the spec (e.g. `macro_f1 = "maximize"`).
    - `kind`: "image" (N×C×H×W in [0, 1]: image augmentation applies), "tabular"
      (standardized features) or any other word (no augmentation); inferred from
      `input_shape` when empty (3 dims: image, 1 dim: tabular).
    - `class_labels`: the label of each class index; `preprocessing`: how raw inputs
      became model inputs (written to the model card).
    """

    train: Dataset
    val: Dataset
    test: Dataset
    input_shape: tuple[int, ...]
    n_classes: int
    metrics: Callable[[torch.nn.Module, DataLoader], dict[str, float]] | None = None
    name: str = "task"
    kind: str = ""
    class_labels: tuple = ()
    preprocessing: dict = field(default_factory=dict)
    # Tabular standardization (training-split statistics): x_model = (x_raw - mean) / std.
    feature_mean: tuple[float, ...] | None = None
    feature_std: tuple[float, ...] | None = None
    streamed: bool = False  # read from files batch by batch: DataLoader workers pay off
    scaling: Scaling | None = None  # raw input -> model input, where paretune did it

    def __post_init__(self) -> None:
        self.input_shape = tuple(int(d) for d in self.input_shape)
        self.n_classes = int(self.n_classes)
        if not self.kind:
            self.kind = {3: "image", 1: "tabular"}.get(len(self.input_shape), "other")


TaskData = Task  # the name older code uses


@dataclass(frozen=True)
class Scaling:
    """How a raw input becomes a model input: x_model = (x_raw - offset) / divisor, one
    value for every element (images) or one per feature (tabular). It travels with the
    model: the model card states it and `paretune train`'s model.pt applies it itself,
    so model.pt takes raw inputs."""

    offset: float | tuple[float, ...]
    divisor: float | tuple[float, ...]
    description: str

    def module(self) -> torch.nn.Module:
        return RawInputs(self)

    def to_raw(self, x: torch.Tensor) -> torch.Tensor:
        """The inverse: a model input back to the raw input it came from."""
        return x * torch.as_tensor(self.divisor, dtype=x.dtype) + torch.as_tensor(self.offset, dtype=x.dtype)


class RawInputs(torch.nn.Module):
    """The scaling as the first layer of a deployed model (buffers, so TorchScript keeps it)."""

    def __init__(self, scaling: Scaling):
        super().__init__()
        self.register_buffer("offset", torch.as_tensor(scaling.offset, dtype=torch.float32))
        self.register_buffer("divisor", torch.as_tensor(scaling.divisor, dtype=torch.float32))
        # A zero offset (images: x / 255) needs no subtraction: one op less per call,
        # which is a measurable share of a tiny model's batch-1 latency.
        self.centered = not bool(torch.any(self.offset != 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x if self.centered else x - self.offset) / self.divisor


class _Batch(tuple):
    """A batch an in-memory dataset handed out whole: collation leaves it as it is."""


def collate(batch: Any) -> Any:
    return batch if isinstance(batch, _Batch) else default_collate(batch)


class ArrayDataset(Dataset):
    """Inputs and labels held as numpy arrays; `X` and `y` stay readable."""

    def __init__(self, X: np.ndarray, y: np.ndarray):
        self.X = np.ascontiguousarray(X, dtype=np.float32)
        self.y = np.asarray(y, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int):
        return torch.from_numpy(self.X[index]), int(self.y[index])

    def __getitems__(self, indices: list[int]) -> _Batch:
        return _Batch((torch.from_numpy(self.X[indices]), torch.from_numpy(self.y[indices])))


def loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    workers: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader over `dataset`; shuffled by its own seeded generator, so the batch
    order is a function of `seed` alone."""
    generator = torch.Generator().manual_seed(int(seed)) if shuffle else None
    return DataLoader(
        dataset,
        batch_size=max(1, min(int(batch_size), len(dataset))),
        shuffle=shuffle,
        generator=generator,
        num_workers=workers,
        persistent_workers=False,
        drop_last=drop_last,
        collate_fn=collate,
    )


def workers_for(task: Task, spec: StudySpec) -> int:
    """DataLoader worker processes: `resources.loader_workers`, else 0 for in-memory
    data and up to 2 (within the trial's CPUs) for data streamed from files."""
    if spec.resources.loader_workers is not None:
        return spec.resources.loader_workers
    return min(2, max(1, int(spec.resources.cpus_per_trial))) if task.streamed else 0


def example_inputs(dataset: Dataset, count: int = 2) -> torch.Tensor:
    """The first `count` inputs of a dataset as one batch."""
    inputs, _ = next(iter(loader(dataset, count)))
    return inputs


def calibration_batches(task: Task, count: int, batch_size: int = 64, seed: int = 0, workers: int = 0) -> list[torch.Tensor]:
    """`count` shuffled training batches (inputs only): int8 calibration."""
    batches = []
    for inputs, _ in loader(task.train, batch_size, shuffle=True, seed=seed, workers=workers):
        batches.append(inputs)
        if len(batches) >= count:
            break
    return batches

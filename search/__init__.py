"""paretune: multi-objective search for efficient models (accuracy, latency, energy)
on Ray Tune + Optuna.

The public API (each name documents its contract):

- `launch(spec, task=, model=, train=, dimensions=, storage=, address=, verbose=)` -> optuna.Study
  (`verbose=True`: the progress and summary `paretune launch` prints)
- `front(study)` -> FrontReport (front, hypervolume, reference point)
- `export(study, out, pick=, where=)` -> Path of a runnable spec with pinned params
- `train(config, out, task=, model=, train=)` -> RetrainReport (artifact + model card)
- `Task`: what a task factory returns (torch Datasets train/val/test, input_shape,
  n_classes, optional metrics)
- `Dimension` (and `spaces.*`): the protocol of a search dimension, for your own
- `TrainingHooks`: what a custom training loop gets from the other dimensions
- `UsageError`: bad input, with one line naming the key or file

The names load on first use, so `paretune --help` does not import torch.
"""

from __future__ import annotations

import importlib

_PUBLIC = {
    "launch": "search.api",
    "front": "search.api",
    "export": "search.api",
    "train": "search.api",
    "as_spec": "search.api",
    "Task": "search.tasks.task",
    "UsageError": "search.core.errors",
    "Dimension": "spaces",
    "TrainingHooks": "spaces",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'search' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
